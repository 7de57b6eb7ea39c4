"""The whole access-control matrix of ``evaluate`` in one table (errbot's style).

Each row is a call, who asked, where, and against which policy; it asserts the verdict, the
effective tier, the deciding rule, the exact sentence the user sees and, for approvals, who
may approve, how many, and the expiry. ``clicks`` then walks the approval through
``approvals.rules.refusal`` the way the approval gateway does: each click is accepted (None)
or refused with a sentence, and accepted clicks count towards the two-person rule.

Besides the real Redis connector, the catalog holds small fake connectors built from the real
``Toolset``/``Action`` types with the other target kinds (github_repo, pulumi_stack,
container), so target matchers are exercised for every kind. Their ``run`` raises: policy
evaluation must never execute anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from approvals.rules import ApproverRule, refusal, remaining
from graph.policy import (
    Channel,
    Policy,
    Proposer,
    Requester,
    Verdict,
    evaluate,
    parse_policy,
)
from tools import redis
from tools.base import Action, ActionContext, Target, Tier, ToolResult, Toolset
from tools.catalog import Call, Catalog

MAIN = """
version: 1
groups:
  sre: {users: [USRE1, USRE2], slack_groups: [SSRE]}
  leads: {users: [ULEAD]}
  oncall: {slack_groups: [SONCALL]}
  dbas: {users: [UDBA1, UDBA2]}
defaults:
  autonomous_max_tier: 2
  approvers: [sre]
  approvals: {4: 2}
  expiry: {1: 15m, 3: 1h, 4: 30m}
  requester_may_approve: {3: true}
channels:
  - match: C0LOCKED
    deny_from_tier: 1
  - match: "#incident-*"
    autonomous_max_tier: 0
  - match: dm
    deny_from_tier: 3
requesters:
  groups: [oncall, sre]
  from_tier: 3
rules:
  - name: never-flushall-prod
    match: {toolset: redis, action: flushall, target: {host: "prod-*"}}
    deny: "FLUSHALL on production Redis is never allowed."
  - name: frozen-repo
    match: {target: {kind: github_repo, repo: acme/legacy}}
    deny: "acme/legacy is frozen; nothing may touch it."
  - name: prod-redis-changes
    match: {toolset: redis, tier: [3, 4], target: {host: "prod-*"}}
    tier: 4
    approvers: [sre, leads]
  - name: staging-db0
    match: {toolset: redis, tier: [3, 4], target: {host: "staging-*", db: "0"}}
    approvers: [dbas]
    approvals: 2
    requester_may_approve: false
  - name: staging-redis
    match: {toolset: redis, tier: [3, 4], target: {host: "staging-*"}}
    expiry: 2h
  - name: main-branch
    match: {toolset: github, tier: [2, 3, 4], target: {branch: [main, master]}}
    tier: production
    approvals: 1
  - name: prod-stack
    match: {target: {kind: pulumi_stack, stack: "prod*"}}
    tier: 4
  - name: dev-stack
    match: {target: {kind: pulumi_stack, stack: dev}}
    tier: 1
  - name: prod-containers
    match: {tier: [3, 4], target: {kind: container, label.env: prod}}
    tier: 4
    approvers: [oncall]
    requesters: {users: [UOPS]}
"""

BARE = "version: 1\n"
TRUSTING = """
version: 1
groups:
  leads: {users: [ULEAD]}
defaults:
  autonomous_max_tier: 2
  llm_autonomous_max_tier: recommend
  approvers: [leads]
"""


class _Repo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repo: str
    base: str | None = None


class _Stack(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stack: str


class _Container(BaseModel):
    model_config = ConfigDict(extra="forbid")
    container: str


class _NoConfig(BaseModel):
    pass


class _DockerConfig(BaseModel):
    labels: dict[str, dict[str, str]] = {
        "api-prod": {"env": "prod", "team": "payments"},
        "api-staging": {"env": "staging"},
    }


def _never_run(params: BaseModel, ctx: ActionContext) -> ToolResult:
    raise AssertionError("policy evaluation must never run an action")


def _action(name: str, tier: Tier, params: type[BaseModel]) -> Action[Any]:
    return Action(name, f"fake {name}", tier, params, lambda p: f"fake {name}", _never_run)


def _repo_target(action: Action[Any], p: Any, config: BaseModel) -> Target:
    attrs = {"repo": p.repo, "owner": p.repo.split("/")[0]}
    branch = {"branch": p.base} if p.base else {}
    return Target(kind="github_repo", name=p.repo, attrs=attrs | branch)


def _stack_target(action: Action[Any], p: Any, config: BaseModel) -> Target:
    attrs = {"project": "acme", "stack": p.stack}
    return Target(kind="pulumi_stack", name=f"acme/{p.stack}", attrs=attrs)


def _container_target(action: Action[Any], p: Any, config: Any) -> Target:
    labels = {f"label.{k}": v for k, v in config.labels.get(p.container, {}).items()}
    return Target(kind="container", name=p.container, attrs={"name": p.container} | labels)


GITHUB = Toolset(
    name="github",
    description="fake GitHub",
    config=_NoConfig,
    actions=[
        _action("read_repo", Tier.OBSERVE, _Repo),
        _action("comment", Tier.RECOMMEND, _Repo),
        _action("open_pr", Tier.DRAFT, _Repo),
        _action("merge", Tier.SANDBOX_EXECUTE, _Repo),
    ],
    target=_repo_target,
)
PULUMI = Toolset(
    name="pulumi",
    description="fake Pulumi",
    config=_NoConfig,
    actions=[_action("preview", Tier.DRAFT, _Stack), _action("up", Tier.SANDBOX_EXECUTE, _Stack)],
    target=_stack_target,
)
DOCKER = Toolset(
    name="docker",
    description="fake Docker",
    config=_DockerConfig,
    actions=[
        _action("logs", Tier.OBSERVE, _Container),
        _action("restart", Tier.SANDBOX_EXECUTE, _Container),
    ],
    target=_container_target,
)
TOOLSETS = (redis.TOOLSET, GITHUB, PULUMI, DOCKER)
REDIS_URLS = {"prod": "redis://prod-cache-1:6379/0", "staging": "redis://staging-cache-1:6379/0"}


@pytest.fixture(scope="module")
def policies() -> dict[str, Policy]:
    return {
        "main": parse_policy(MAIN, "policy.yml", TOOLSETS),
        "bare": parse_policy(BARE, "policy.yml", TOOLSETS),
        "default": Policy(),
        "trusting": parse_policy(TRUSTING, "policy.yml", TOOLSETS),
        # The pre-file constructor still works for code that builds a policy directly.
        "direct": Policy(
            approvers=ApproverRule(users=("ULEAD",)), autonomous_max_tier=Tier.OBSERVE
        ),
    }


def catalog_for(redis_host: str) -> Catalog:
    configs = {
        "redis": redis.RedisConfig(url=REDIS_URLS[redis_host]),
        "github": _NoConfig(),
        "pulumi": _NoConfig(),
        "docker": _DockerConfig(),
    }
    return Catalog(TOOLSETS, configs)


def call_of(text: str) -> Call:
    toolset, action, *pairs = text.split()
    params = dict(p.split("=", 1) for p in pairs)
    return Call(id="c1", toolset=toolset, action=action, params=params)


def channel_of(text: str) -> Channel:
    if text == "dm":
        return Channel(id="D0DM", is_dm=True)
    if text.startswith("#"):
        return Channel(id="C0NAMED", name=text[1:])
    return Channel(id=text)


Click = tuple[str, frozenset[str], str | None]
SRE = "<@USRE1>, <@USRE2>, <!subteam^SSRE>"
SRE_LEADS = "<@USRE1>, <@USRE2>, <@ULEAD>, <!subteam^SSRE>"
NOT_YOURS = "you requested this action, and its tier needs someone else to approve it."
TWICE = "you already approved it; it needs a different approver."
NO_FILE = (
    "needs approval, but no approvers are configured because no policy file is loaded. Set "
    "OPSBOT_POLICY to a policy file that names approvers (see policy.example.yml)."
)
CATALOG_NAMES = "Available: `docker`, `github`, `pulumi`, `redis`."
REDIS_ACTIONS = "Available: `del`, `exists`, `flushall`, `flushdb`, `get`, `info`, `scan`, `slowlog`."
ONCALL_SRE = "<@USRE1>, <@USRE2>, <!subteam^SONCALL>, <!subteam^SSRE>"
NONE: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Case:
    id: str
    call: str
    verdict: Verdict
    tier: Tier
    rule: str
    reason: str
    user: str = "USRE1"
    groups: frozenset[str] = NONE
    channel: str = "#ops"
    redis: str = "prod"
    policy: str = "main"
    approvers: str | None = None  # ApproverRule.describe() when the verdict is APPROVE
    self_ok: bool | None = None
    expires: int | None = None
    clicks: tuple[Click, ...] = ()
    left: int | None = None  # approvals still missing after the clicks
    proposer: Proposer = Proposer.PERSON  # MODEL: the LLM, an alert's run, an MCP client


A, D, OK = Verdict.APPROVE, Verdict.DENY, Verdict.ALLOW
T0, T1, T2, T3, T4 = Tier.OBSERVE, Tier.RECOMMEND, Tier.DRAFT, Tier.SANDBOX_EXECUTE, Tier.PRODUCTION
PROD = "redis prod-cache-1:6379/0"
STAGING0 = "redis staging-cache-1:6379/0"
STAGING3 = "redis staging-cache-1:6379/3"

CASES = [
    # --- the call itself is wrong: deny before any rule is consulted -------------------------
    Case("unknown-toolset", "rdis info", D, T4, "catalog",
         f"Unknown toolset `rdis`. Did you mean `redis`? {CATALOG_NAMES}"),
    Case("unknown-action", "redis flush", D, T4, "catalog",
         f"`redis` has no action `flush`. Did you mean `flushdb`? {REDIS_ACTIONS}"),
    Case("param-out-of-range", "redis slowlog count=999", D, T4, "catalog",
         "Bad parameters for `redis slowlog`: count: Input should be less than or equal to 128"),
    Case("param-unknown", "redis info colour=red", D, T4, "catalog",
         "Bad parameters for `redis info`: colour: Extra inputs are not permitted"),
    Case("param-missing", "github merge", D, T4, "catalog",
         "Bad parameters for `github merge`: repo: Field required"),
    # --- autonomy: low tiers run --------------------------------------------------------------
    Case("read-prod-redis", "redis info", OK, T0, "default",
         "`redis info` is tier 0 observe; it runs without approval."),
    Case("read-prod-in-incident", "redis slowlog", OK, T0, "default",
         "`redis slowlog` is tier 0 observe; it runs without approval.", channel="#incident-db"),
    Case("draft-pr-feature-branch", "github open_pr repo=acme/api base=feat-x", OK, T2, "default",
         "`github open_pr` is tier 2 draft; it runs without approval."),
    Case("read-repo-in-dm", "github read_repo repo=acme/api", OK, T0, "default",
         "`github read_repo` is tier 0 observe; it runs without approval.", channel="dm"),
    Case("rule-cannot-lower-draft", "pulumi preview stack=dev", OK, T2, "dev-stack",
         "`pulumi preview` is tier 2 draft; it runs without approval."),
    # --- calls no person typed: llm_autonomous_max_tier (default 0) ---------------------------
    Case("model-reads-freely", "redis info", OK, T0, "default",
         "`redis info` is tier 0 observe; it runs without approval.", proposer=Proposer.MODEL),
    Case("model-draft-pr-needs-approval", "github open_pr repo=acme/api base=feat-x", A, T2,
         "default",
         "`github open_pr` on github_repo acme/api is tier 2 draft, and calls that no person "
         f"typed run only tier 0 observe and below without approval: it needs approval from one "
         f"of: {SRE}. The request expires after 1h.",
         approvers=SRE, self_ok=True, expires=3600, proposer=Proposer.MODEL),
    Case("model-in-incident-channel-names-both-caps", "github comment repo=acme/api", A, T1,
         "default",
         "`github comment` on github_repo acme/api is tier 1 recommend, and #incident-api runs "
         "only tier 0 observe and below without approval, and calls that no person typed run "
         f"only tier 0 observe and below without approval: it needs approval from one of: {SRE}."
         " The request expires after 15m.",
         channel="#incident-api", approvers=SRE, self_ok=True, expires=900,
         proposer=Proposer.MODEL),
    Case("model-draft-without-a-policy-file", "github open_pr repo=acme/api", D, T2, "default",
         f"`github open_pr` is tier 2 draft and {NO_FILE}", policy="default",
         proposer=Proposer.MODEL),
    Case("person-draft-without-a-policy-file", "github open_pr repo=acme/api", OK, T2, "default",
         "`github open_pr` is tier 2 draft; it runs without approval.", policy="default"),
    Case("model-raised-limit", "github comment repo=acme/api", OK, T1, "default",
         "`github comment` is tier 1 recommend; it runs without approval.", policy="trusting",
         proposer=Proposer.MODEL),
    Case("model-raised-limit-still-below-people", "github open_pr repo=acme/api", A, T2,
         "default",
         "`github open_pr` on github_repo acme/api is tier 2 draft, and calls that no person "
         "typed run only tier 1 recommend and below without approval: it needs approval from "
         "one of: <@ULEAD>. The request expires after 1h.", policy="trusting",
         approvers="<@ULEAD>", self_ok=True, expires=3600, proposer=Proposer.MODEL),
    # --- per-channel caps and ceilings ------------------------------------------------------
    Case("incident-cap-draft-needs-approval", "github open_pr repo=acme/api base=feat-x", A, T2,
         "default",
         "`github open_pr` on github_repo acme/api is tier 2 draft, and #incident-api runs only "
         f"tier 0 observe and below without approval: it needs approval from one of: {SRE}. "
         "The request expires after 1h.",
         channel="#incident-api", approvers=SRE, self_ok=True, expires=3600,
         clicks=(("USRE1", NONE, None),), left=0),
    Case("incident-cap-tier1-expiry", "github comment repo=acme/api", A, T1, "default",
         "`github comment` on github_repo acme/api is tier 1 recommend, and #incident-api runs "
         f"only tier 0 observe and below without approval: it needs approval from one of: {SRE}. "
         "The request expires after 15m.",
         channel="#incident-api", approvers=SRE, self_ok=True, expires=900),
    Case("incident-name-unknown-id-only", "pulumi preview stack=dev", OK, T2, "dev-stack",
         "`pulumi preview` is tier 2 draft; it runs without approval.", channel="C0NONAME"),
    Case("locked-channel-denies-tier1", "github comment repo=acme/api", D, T1, "channel C0LOCKED",
         "`github comment` is tier 1 recommend, and channel C0LOCKED may not run tier 1 recommend "
         "actions or above. Ask in another channel.", channel="C0LOCKED"),
    Case("locked-channel-allows-tier0", "redis info", OK, T0, "default",
         "`redis info` is tier 0 observe; it runs without approval.", channel="C0LOCKED"),
    # --- direct messages --------------------------------------------------------------------
    Case("dm-denies-tier3", "redis del keys=k1", D, T3, "channel dm",
         "`redis del` is tier 3 sandbox-execute, and direct messages may not run tier 3 "
         "sandbox-execute actions or above. Ask in a team channel instead.",
         channel="dm", redis="staging"),
    Case("dm-allows-draft", "github open_pr repo=acme/api base=feat-x", OK, T2, "default",
         "`github open_pr` is tier 2 draft; it runs without approval.", channel="dm"),
    Case("dm-tier-raised-by-target", "github open_pr repo=acme/api base=main", D, T4,
         "channel dm",
         "`github open_pr` is tier 4 production, and direct messages may not run tier 3 "
         "sandbox-execute actions or above. Ask in a team channel instead.", channel="dm"),
    # --- hard denies beat everything ----------------------------------------------------------
    Case("hard-deny-flushall-prod", "redis flushall", D, T4, "never-flushall-prod",
         f"`redis flushall` on {PROD} is denied by policy rule `never-flushall-prod`: "
         "FLUSHALL on production Redis is never allowed."),
    Case("hard-deny-beats-dm-rule", "redis flushall", D, T4, "never-flushall-prod",
         f"`redis flushall` on {PROD} is denied by policy rule `never-flushall-prod`: "
         "FLUSHALL on production Redis is never allowed.", channel="dm"),
    Case("hard-deny-even-for-lead", "redis flushall", D, T4, "never-flushall-prod",
         f"`redis flushall` on {PROD} is denied by policy rule `never-flushall-prod`: "
         "FLUSHALL on production Redis is never allowed.",
         user="ULEAD", groups=frozenset({"SSRE"})),
    Case("hard-deny-by-kind-tier0", "github read_repo repo=acme/legacy", D, T0, "frozen-repo",
         "`github read_repo` on github_repo acme/legacy is denied by policy rule `frozen-repo`: "
         "acme/legacy is frozen; nothing may touch it."),
    Case("flushall-staging-not-denied", "redis flushall", A, T4, "staging-db0",
         f"`redis flushall` on {STAGING0} is tier 4 production: it needs 2 approvals from "
         "different people among: <@UDBA1>, <@UDBA2>; the requester can't approve it. "
         "The request expires after 30m.",
         redis="staging", approvers="2 of <@UDBA1>, <@UDBA2>", self_ok=False, expires=1800),
    # --- who may request ------------------------------------------------------------------------
    Case("requester-not-allowed", "redis del keys=k1 db=3", D, T3, "requesters",
         f"<@UGUEST> may not request `redis del`: only {ONCALL_SRE} may request tier 3 "
         "sandbox-execute actions and above (policy `requesters`).",
         user="UGUEST", redis="staging"),
    Case("requester-via-slack-group", "redis del keys=k1 db=3", A, T3, "staging-redis",
         f"`redis del` on {STAGING3} is tier 3 sandbox-execute: it needs approval from one of: "
         f"{SRE}. The request expires after 2h.",
         user="UGUEST", groups=frozenset({"SONCALL"}), redis="staging", approvers=SRE,
         self_ok=True, expires=7200),
    Case("guest-may-read", "redis info", OK, T0, "default",
         "`redis info` is tier 0 observe; it runs without approval.", user="UGUEST"),
    Case("rule-requesters-replace-policy", "docker restart container=api-prod", D, T4,
         "prod-containers",
         "<@USRE1> may not request `docker restart`: only <@UOPS> may request actions "
         "(rule `prod-containers`)."),
    # --- target-based tier raises and self-approval ------------------------------------------
    Case("prod-del-raised-two-person", "redis del keys=k1", A, T4, "prod-redis-changes",
         f"`redis del` on {PROD} is tier 4 production (raised from 3 sandbox-execute by rule "
         "`prod-redis-changes`): it needs 2 approvals from different people among: "
         f"{SRE_LEADS}; the requester can't approve it. The request expires after 30m.",
         approvers=f"2 of {SRE_LEADS}", self_ok=False, expires=1800,
         clicks=(("USRE1", NONE, NOT_YOURS), ("USRE2", NONE, None), ("USRE2", NONE, TWICE),
                 ("ULEAD", NONE, None)), left=0),
    Case("prod-flushdb-own-tier4", "redis flushdb", A, T4, "prod-redis-changes",
         f"`redis flushdb` on {PROD} is tier 4 production: it needs 2 approvals from different "
         f"people among: {SRE_LEADS}; the requester can't approve it. "
         "The request expires after 30m.",
         approvers=f"2 of {SRE_LEADS}", self_ok=False, expires=1800,
         clicks=(("ULEAD", NONE, None), ("ULEAD", NONE, TWICE)), left=1),
    Case("prod-read-not-raised", "redis get key=session:1", OK, T0, "default",
         "`redis get` is tier 0 observe; it runs without approval."),
    Case("merge-main-raised-rule-approvals", "github merge repo=acme/api base=main", A, T4,
         "main-branch",
         "`github merge` on github_repo acme/api is tier 4 production (raised from 3 "
         f"sandbox-execute by rule `main-branch`): it needs approval from one of: {SRE}; "
         "the requester can't approve it. The request expires after 30m.",
         approvers=SRE, self_ok=False, expires=1800,
         clicks=(("USRE1", NONE, NOT_YOURS), ("UX9", frozenset({"SSRE"}), None)), left=0),
    Case("pr-to-main-raised", "github open_pr repo=acme/api base=master", A, T4, "main-branch",
         "`github open_pr` on github_repo acme/api is tier 4 production (raised from 2 draft by "
         f"rule `main-branch`): it needs approval from one of: {SRE}; the requester can't "
         "approve it. The request expires after 30m.",
         approvers=SRE, self_ok=False, expires=1800),
    Case("merge-feature-self-approval-tier3", "github merge repo=acme/api base=feat-x", A, T3,
         "default",
         "`github merge` on github_repo acme/api is tier 3 sandbox-execute: it needs approval "
         f"from one of: {SRE}. The request expires after 1h.",
         approvers=SRE, self_ok=True, expires=3600, clicks=(("USRE1", NONE, None),), left=0),
    Case("pulumi-prod-preview-raised", "pulumi preview stack=prod-eu", A, T4, "prod-stack",
         "`pulumi preview` on pulumi_stack acme/prod-eu is tier 4 production (raised from 2 "
         f"draft by rule `prod-stack`): it needs 2 approvals from different people among: {SRE}; "
         "the requester can't approve it. The request expires after 30m.",
         approvers=f"2 of {SRE}", self_ok=False, expires=1800),
    Case("pulumi-dev-up-never-lowered", "pulumi up stack=dev", A, T3, "dev-stack",
         "`pulumi up` on pulumi_stack acme/dev is tier 3 sandbox-execute: it needs approval from "
         f"one of: {SRE}. The request expires after 1h.",
         approvers=SRE, self_ok=True, expires=3600),
    Case("container-label-slack-group-approvers", "docker restart container=api-prod", A, T4,
         "prod-containers",
         "`docker restart` on container api-prod is tier 4 production (raised from 3 "
         "sandbox-execute by rule `prod-containers`): it needs 2 approvals from different people "
         "among: <!subteam^SONCALL>; the requester can't approve it. "
         "The request expires after 30m.",
         user="UOPS", groups=frozenset({"SONCALL"}), approvers="2 of <!subteam^SONCALL>",
         self_ok=False, expires=1800,
         clicks=(("UOPS", frozenset({"SONCALL"}), NOT_YOURS),
                 ("USRE1", frozenset({"SSRE"}),
                  "you are not one of its approvers (2 of <!subteam^SONCALL>)."),
                 ("UX1", frozenset({"SONCALL"}), None), ("UX1", frozenset({"SONCALL"}), TWICE),
                 ("UX2", frozenset({"SONCALL", "SSRE"}), None)), left=0),
    Case("container-label-staging-default", "docker restart container=api-staging", A, T3,
         "default",
         "`docker restart` on container api-staging is tier 3 sandbox-execute: it needs approval "
         f"from one of: {SRE}. The request expires after 1h.",
         approvers=SRE, self_ok=True, expires=3600,
         clicks=(("ULEAD", NONE, f"you are not one of its approvers ({SRE})."),), left=1),
    Case("container-logs-prod-tier0", "docker logs container=api-prod", OK, T0, "default",
         "`docker logs` is tier 0 observe; it runs without approval."),
    # --- rule order: first match wins ---------------------------------------------------------
    Case("first-match-staging-db0-over-staging", "redis del keys=k1", A, T3, "staging-db0",
         f"`redis del` on {STAGING0} is tier 3 sandbox-execute: it needs 2 approvals from "
         "different people among: <@UDBA1>, <@UDBA2>; the requester can't approve it. "
         "The request expires after 1h.",
         redis="staging", approvers="2 of <@UDBA1>, <@UDBA2>", self_ok=False, expires=3600,
         clicks=(("USRE1", NONE, NOT_YOURS), ("UDBA1", NONE, None), ("UDBA1", NONE, TWICE),
                 ("USRE2", NONE,
                  "you are not one of its approvers (2 of <@UDBA1>, <@UDBA2>)."),
                 ("UDBA2", NONE, None)), left=0),
    Case("two-person-rule-unsatisfiable", "redis del keys=k1", D, T3, "staging-db0",
         "`redis del` needs 2 approvals from different people, but only 1 eligible approver(s) "
         "are named (<@UDBA1>, <@UDBA2>, not counting the requester). Add approvers in "
         "policy.yml.",
         user="UDBA1", groups=frozenset({"SONCALL"}), redis="staging"),
    Case("first-match-staging-other-db", "redis del keys=k1 db=3", A, T3, "staging-redis",
         f"`redis del` on {STAGING3} is tier 3 sandbox-execute: it needs approval from one of: "
         f"{SRE}. The request expires after 2h.",
         redis="staging", approvers=SRE, self_ok=True, expires=7200,
         clicks=(("USRE1", NONE, None),), left=0),
    # --- no policy file: the safe default ---------------------------------------------------
    Case("default-policy-reads", "redis info", OK, T0, "default",
         "`redis info` is tier 0 observe; it runs without approval.", policy="default"),
    Case("default-policy-drafts", "github open_pr repo=acme/api base=main", OK, T2, "default",
         "`github open_pr` is tier 2 draft; it runs without approval.", policy="default"),
    Case("default-policy-denies-tier3", "redis del keys=k1", D, T3, "default",
         f"`redis del` is tier 3 sandbox-execute and {NO_FILE}", policy="default"),
    Case("default-policy-denies-tier4", "redis flushall", D, T4, "default",
         f"`redis flushall` is tier 4 production and {NO_FILE}", policy="default", channel="dm"),
    Case("file-without-approvers", "pulumi up stack=dev", D, T3, "default",
         "`pulumi up` is tier 3 sandbox-execute and needs approval, but policy.yml names no "
         "approvers for it. Add `approvers:` to `defaults`.", policy="bare"),
    Case("direct-policy-object", "github comment repo=acme/api", A, T1, "default",
         "`github comment` on github_repo acme/api is tier 1 recommend: it needs approval from "
         "one of: <@ULEAD>. The request expires after 1h.",
         policy="direct", approvers="<@ULEAD>", self_ok=True, expires=3600),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_policy_table(case: Case, policies: dict[str, Policy]) -> None:
    requester = Requester(user=case.user, groups=case.groups)
    decision = evaluate(
        policies[case.policy], catalog_for(case.redis), call_of(case.call), requester,
        channel_of(case.channel), case.proposer,
    )
    assert (decision.verdict, decision.tier, decision.rule) == (case.verdict, case.tier, case.rule)
    assert decision.reason == case.reason
    if case.verdict is not Verdict.APPROVE:
        assert decision.approval is None  # nothing for anyone to click, whoever they are
        return
    assert decision.approval is not None
    assert decision.approval.describe() == case.approvers
    assert decision.approval.requester_may_approve is case.self_ok
    assert decision.expires_in_s == case.expires
    _walk_clicks(case, decision.approval)


def _walk_clicks(case: Case, rule: ApproverRule) -> None:
    approved: frozenset[str] = frozenset()
    for clicker, groups, expected in case.clicks:
        assert refusal(rule, case.user, clicker, groups, approved) == expected, clicker
        if expected is None:
            approved |= {clicker}
    if case.left is not None:
        assert remaining(rule, approved) == case.left


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)
