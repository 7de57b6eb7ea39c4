"""The compiled, runtime form of a policy: who asks, where, and what the rules say.

:func:`compile_policy` turns a validated :class:`~graph.policy.schema.PolicyFile` into a
:class:`Policy` whose approvers are already Slack ids (group names resolved). These models are
plain data plus small matching functions; ``graph/policy/evaluate.py`` evaluates calls against them.
Code that needs a policy without a file (tests, the console) may build one directly::

    Policy(approvers=ApproverRule(users=("U01SRE",)), autonomous_max_tier=Tier.OBSERVE)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field

from approvals.rules import ApproverRule
from graph.policy.limits import PolicyLimits, compile_limits
from graph.policy.schema import (
    AlertRouteSpec,
    GithubRepoSpec,
    PolicyFile,
    RequestersSpec,
    RuleSpec,
)
from tools.base import Tier
from tools.catalog import Resolved
from tools.secrets import SHAPES, Shape, shape

DEFAULT_EXPIRY_S = 3600
_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Requester(BaseModel):
    """Who asked; ``groups`` are the Slack user-group ids (S…) the bot resolved for them."""

    model_config = ConfigDict(frozen=True)

    user: str
    groups: frozenset[str] = frozenset()


class Proposer(StrEnum):
    """Who chose the exact call: a person typed it, or a model (or an alert's run, or an MCP
    client) proposed it after reading text anyone could have written."""

    PERSON = "person"
    MODEL = "model"


class Channel(BaseModel):
    """Where the request came from. ``name`` (without #) may be empty when Slack didn't say."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str = ""
    is_dm: bool = False

    @property
    def shown(self) -> str:
        if self.is_dm:
            return "direct messages"
        return f"#{self.name.lstrip('#')}" if self.name else f"channel {self.id}"


class Match(BaseModel):
    """Glob patterns a call must fit; an empty field matches anything."""

    model_config = _FROZEN

    toolset: tuple[str, ...] = ()
    action: tuple[str, ...] = ()
    tiers: tuple[Tier, ...] = ()
    target: dict[str, tuple[str, ...]] = {}

    def fits(self, resolved: Resolved) -> bool:
        target = resolved.target
        facts = {**target.attrs, "kind": target.kind}
        return (
            _any(resolved.toolset.name, self.toolset)
            and _any(resolved.action.name, self.action)
            and (not self.tiers or resolved.tier in self.tiers)
            and all(k in facts and _any(facts[k], p) for k, p in self.target.items())
        )


def _any(value: str, patterns: tuple[str, ...]) -> bool:
    return not patterns or any(fnmatchcase(value, p) for p in patterns)


class RequesterRule(BaseModel):
    """Who may request actions of ``from_tier`` and above."""

    model_config = _FROZEN

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    from_tier: Tier = Tier.OBSERVE

    def allows(self, requester: Requester, tier: Tier) -> bool:
        return tier < self.from_tier or ApproverRule(users=self.users, groups=self.groups).includes(
            requester.user, requester.groups
        )

    def describe(self) -> str:
        return ApproverRule(users=self.users, groups=self.groups).people()


class Rule(BaseModel):
    """One compiled rule; ``approvers`` already resolved from group names to Slack ids."""

    model_config = _FROZEN

    name: str
    match: Match = Match()
    deny: str | None = None
    tier: Tier | None = None
    approvers: ApproverRule | None = None
    approvals: int | None = None
    expiry_s: int | None = None
    requester_may_approve: bool | None = None
    requesters: RequesterRule | None = None


class ChannelRule(BaseModel):
    """A ``channels`` entry: ``match`` is a channel id glob, a ``#name`` glob, or ``dm``."""

    model_config = _FROZEN

    match: str
    autonomous_max_tier: Tier | None = None
    deny_from_tier: Tier | None = None

    def fits(self, channel: Channel) -> bool:
        return channel_matches(self.match, channel)


def channel_matches(pattern: str, channel: Channel) -> bool:
    """``dm``, ``#name-glob`` (best-effort: needs ``channel.name``) or a channel id glob."""
    if pattern == "dm":
        return channel.is_dm
    if pattern.startswith("#"):
        name = channel.name.lstrip("#").lower()
        return bool(name) and fnmatchcase(name, pattern[1:].lower())
    return fnmatchcase(channel.id, pattern)


class Policy(BaseModel):
    """The compiled policy. ``Policy()`` is the safe default used when no file is configured."""

    model_config = ConfigDict(extra="forbid")

    approvers: ApproverRule = ApproverRule()
    autonomous_max_tier: Tier = Tier.DRAFT
    llm_autonomous_max_tier: Tier = Tier.OBSERVE  # calls no person typed
    expiry_s: dict[int, int] = Field(default_factory=lambda: {3: 3600, 4: 1800})
    incident_channels: tuple[str, ...] = ()
    approvals: dict[int, int] = {}
    requester_may_approve: dict[int, bool] = {}
    channels: tuple[ChannelRule, ...] = ()
    requesters: RequesterRule | None = None
    rules: tuple[Rule, ...] = ()
    pagerduty_bot_ids: tuple[str, ...] = ()
    alert_routes: tuple[AlertRouteSpec, ...] = ()  # Alertmanager group labels -> channel
    github_repos: tuple[GithubRepoSpec, ...] = ()  # GitHub webhooks' repos -> channel
    limits: PolicyLimits = PolicyLimits()  # run rate limits and LLM budgets
    redact_shapes: tuple[str, ...] | None = None  # None: every shape opsbot knows
    redact_extra: dict[str, str] = {}  # an operator's own shapes: name -> regex
    source: str | None = None  # the file it came from; None for the built-in default

    def redaction(self) -> list[Shape]:
        """The secret shapes to redact from everything opsbot writes (``REDACTOR.use``)."""
        known = [s for s in SHAPES if self.redact_shapes is None or s.name in self.redact_shapes]
        return known + [shape(name, regex) for name, regex in self.redact_extra.items()]

    def is_incident_channel(self, channel: Channel | str) -> bool:
        """Whether PagerDuty alerts in ``channel`` are investigated (a str is an id or #name)."""
        if isinstance(channel, str):
            named = channel.startswith("#")
            channel = Channel(id="", name=channel) if named else Channel(id=channel)
        return any(channel_matches(p, channel) for p in self.incident_channels)

    def slack_groups(self) -> set[str]:
        """Every Slack user-group id the policy names (whose membership the bot must resolve)."""
        rules = [self.approvers, self.requesters]
        rules += [r for rule in self.rules for r in (rule.approvers, rule.requesters)]
        return {g for r in rules if r is not None for g in r.groups}

    def is_pagerduty_bot(self, bot_id: str) -> bool:
        return bot_id in self.pagerduty_bot_ids

    def alert_channel(self, labels: Mapping[str, str]) -> str | None:
        """The channel of the first alert route whose ``match`` fits ``labels`` (None: none)."""
        for route in self.alert_routes:
            if all(_any(labels.get(k, ""), v) for k, v in route.match.items()):
                return route.channel
        return None

    def github_repo(self, repo: str) -> GithubRepoSpec | None:
        """The first ``github_repos`` entry naming ``repo`` (owner/name, case-insensitive)."""
        return next((r for r in self.github_repos
                     if fnmatchcase(repo.lower(), r.repo.lower())), None)

    def first_rule(self, resolved: Resolved) -> Rule | None:
        return next((r for r in self.rules if r.match.fits(resolved)), None)

    def channel_rule(self, channel: Channel) -> ChannelRule | None:
        return next((c for c in self.channels if c.fits(channel)), None)


def compile_policy(spec: PolicyFile, source: str) -> Policy:
    """Resolve group names to Slack ids and fill defaults: the runtime form of ``spec``."""
    defaults = spec.defaults
    return Policy(
        approvers=_approvers(spec, defaults.approvers),
        autonomous_max_tier=defaults.autonomous_max_tier,
        llm_autonomous_max_tier=defaults.llm_autonomous_max_tier,
        expiry_s={3: 3600, 4: 1800} | {int(t): s for t, s in defaults.expiry.items()},
        incident_channels=spec.incident_channels,
        approvals={int(t): n for t, n in defaults.approvals.items()},
        requester_may_approve={int(t): b for t, b in defaults.requester_may_approve.items()},
        channels=tuple(ChannelRule(**c.model_dump()) for c in spec.channels),
        requesters=_requesters(spec, spec.requesters),
        rules=tuple(_rule(spec, r) for r in spec.rules),
        pagerduty_bot_ids=spec.pagerduty_bot_ids,
        alert_routes=spec.alert_routes,
        github_repos=spec.github_repos,
        limits=compile_limits(spec.limits),
        redact_shapes=spec.redaction.shapes,
        redact_extra=spec.redaction.extra,
        source=source,
    )


def _approvers(spec: PolicyFile, names: Sequence[str]) -> ApproverRule:
    groups = [spec.groups[n] for n in names]
    users = dict.fromkeys(u for g in groups for u in g.users)
    subteams = dict.fromkeys(s for g in groups for s in g.slack_groups)
    return ApproverRule(users=tuple(users), groups=tuple(subteams))


def _requesters(spec: PolicyFile, given: RequestersSpec | None) -> RequesterRule | None:
    if given is None:
        return None
    named = _approvers(spec, given.groups)
    users = tuple(dict.fromkeys((*given.users, *named.users)))
    groups = tuple(dict.fromkeys((*given.slack_groups, *named.groups)))
    return RequesterRule(users=users, groups=groups, from_tier=given.from_tier)


def _rule(spec: PolicyFile, rule: RuleSpec) -> Rule:
    m = rule.match
    match = Match(
        toolset=m.toolset or (), action=m.action or (), tiers=m.tier or (), target=m.target
    )
    return Rule(
        name=rule.name,
        match=match,
        deny=rule.deny.strip() if rule.deny else None,
        tier=rule.tier,
        approvers=_approvers(spec, rule.approvers) if rule.approvers else None,
        approvals=rule.approvals,
        expiry_s=rule.expiry,
        requester_may_approve=rule.requester_may_approve,
        requesters=_requesters(spec, rule.requesters),
    )
