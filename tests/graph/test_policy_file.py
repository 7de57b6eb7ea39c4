"""The policy file: loading, line-precise errors, the shipped example, and the CLI commands.

``tests/fixtures/policies/broken/`` holds one realistic mistake per file; each must be reported
by ``opsbot policy check`` with the exact ``file:line: where: sentence`` and exit code 1.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot.policy_cmd import check, explain, parse_channel
from graph.policy import Channel, Policy, PolicyError, load_policy, parse_policy
from tools.base import Tier

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "policies"
EXAMPLE = ROOT / "policy.example.yml"
PROD_REDIS = "redis://prod-cache-1:6379/0"

BROKEN = {
    "tier_out_of_range.yml": [(16, "rules[2].match.tier: 7 is not a tier (0-4)")],
    "unknown_key_typo.yml": [
        (9, "rules[0].teir: unknown key `teir` (did you mean `tier`?); known keys here: name, "
            "match, deny, tier, approvers, approvals, expiry, requester_may_approve, requesters"),
    ],
    "duplicate_key.yml": [
        (8, "defaults.approvals: duplicate key (first on line 6); YAML would silently keep only "
            "the last one"),
    ],
    "unquoted_channel.yml": [
        (5, "channels[1].match: is empty; if you wrote an unquoted #name, quote it "
            "(\"#incident-*\"): in YAML an unquoted # starts a comment"),
    ],
    "bad_duration.yml": [
        (5, "defaults.expiry.4: `30 minutes` is not a duration; write e.g. 90s, 30m, 1h or 1h30m"),
    ],
    "llm_above_people.yml": [
        (5, "defaults.llm_autonomous_max_tier: 2 is above autonomous_max_tier (1): the model "
            "never gets more autonomy than a person; lower it"),
    ],
    "autonomy_tier4.yml": [
        (4, "defaults.autonomous_max_tier: 4 would let production changes run without approval; "
            "the highest allowed is 3 (tier 4 is always gated)"),
    ],
    "undefined_group.yml": [
        (11, "rules[0].approvers[1]: `lead` is not a group under `groups` (did you mean "
             "`leads`?); defined: sre, leads"),
    ],
    "unreachable_deny.yml": [
        (10, "rules[1]: rule `never-flushall-prod` can never match: rules[0] (`prod-redis`) comes "
             "first and matches everything it does (first match wins); move it above "
             "`prod-redis`"),
    ],
    "bad_user_id.yml": [
        (6, "groups.sre.users[1]: `alice` is not a Slack user id (U… or W…); copy it from the "
            "profile: ⋮ → Copy member ID"),
    ],
    "yaml_syntax.yml": [
        (5, "not valid YAML: expected ',' or '}', but got '<scalar>' (while parsing a flow "
            "mapping that starts on line 4)"),
    ],
    "missing_version.yml": [
        (1, "version: missing required key `version` (write `version: 1` at the top of the "
            "file)"),
    ],
    "self_approve_tier4.yml": [
        (6, "defaults.requester_may_approve: tier 4 never lets the requester approve; remove "
            "`4: true`"),
    ],
    "deny_with_tier.yml": [(3, "rules[0]: a `deny` rule denies outright; remove `tier`")],
    "unknown_action.yml": [
        (6, "rules[0].match.action: `flushal` matches no action of redis this opsbot has (did "
            "you mean `flushall`?); it has: del, exists, flushall, flushdb, get, info, scan, slowlog"),
    ],
    "two_person_impossible.yml": [
        (8, "rules[0].approvals: 3 approvals from different people are required, but its "
            "approvers (dbas) name only 2 people and no Slack user group"),
    ],
    "rule_without_effect.yml": [
        (3, "rules[0]: the rule has no effect; give it `deny` or one of: tier, approvers, "
            "approvals, expiry, requester_may_approve, requesters"),
    ],
    "multiple_errors.yml": [
        (3, "groups.sre.slack_groups[0]: `sre-team` is not a Slack user-group id (S…); find it "
            "with the usergroups.list API"),
        (5, "defaults.autonomous_max_tier: 4 would let production changes run without approval; "
            "the highest allowed is 3 (tier 4 is always gated)"),
        (7, "channels[0].match: `general` is not a channel pattern (did you mean \"#general\"?); "
            "write a channel id (C…), a quoted #name glob like \"#incident-*\", or dm"),
        (10, "rules[0].name: `Prod Redis` is not a name; use lowercase letters, digits, - and _"),
    ],
    "alert_route_channel_name.yml": [
        (4, "alert_routes[0].channel: `#payments-incidents` is not a channel id; a run posts by "
            "id, so write the channel's id (C…, from the channel's details), not a #name or a "
            "glob"),
        (5, "alert_routes[1].match.2xx: `2xx` is not a Prometheus label name (letters, digits "
            "and _, not starting with a digit)"),
    ],
    "alert_route_unreachable.yml": [
        (4, "alert_routes[1].match: alert_routes[0] catches every group, so this route never "
            "applies (first match wins)"),
        (9, "github_repos[1].repo: `Acme/Shop` is already named by github_repos[0], so this "
            "entry never applies (first match wins)"),
    ],
    "github_repo_without_owner.yml": [
        (3, "github_repos[0].repo: `shop` is not a repository; write owner/name (globs "
            "allowed: acme/*)"),
    ],
}


def test_every_broken_fixture_has_an_expectation() -> None:
    on_disk = {p.name for p in (FIXTURES / "broken").glob("*.yml")}
    assert on_disk == set(BROKEN)
    assert len(on_disk) >= 10


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_check_reports_each_error_with_its_line(name: str, capsys: pytest.CaptureFixture[str]):
    path = FIXTURES / "broken" / name
    assert check(str(path)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"{path}:{line}: {text}" for line, text in BROKEN[name]]


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_load_policy_raises_the_same_issues(name: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(FIXTURES / "broken" / name)
    assert [(i.line, i.render("f").split(": ", 1)[1]) for i in caught.value.issues] == BROKEN[name]


@pytest.mark.parametrize(
    ("path", "printed"),
    [
        (EXAMPLE, "ok: 7 rules"),
        (FIXTURES / "good" / "team.yml", "ok: 2 rules"),
        (FIXTURES / "good" / "minimal.yml", "ok: 0 rules"),
    ],
    ids=["shipped-example", "team", "minimal"],
)
def test_good_files_pass_check(path: Path, printed: str, capsys: pytest.CaptureFixture[str]):
    assert check(str(path)) == 0
    assert capsys.readouterr() == (printed + "\n", "")


def test_check_on_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yml"
    assert check(str(missing)) == 1
    assert capsys.readouterr().err == (
        f"{missing}: cannot read the policy file: No such file or directory\n"
    )


def test_friendly_forms_compile_to_the_runtime_policy() -> None:
    policy = load_policy(FIXTURES / "good" / "team.yml")
    assert policy.autonomous_max_tier is Tier.SANDBOX_EXECUTE  # written `sandbox-execute`
    assert policy.approvals == {4: 2}  # written `production: 2`
    assert policy.expiry_s == {3: 2700, 4: 900}
    assert policy.approvers.users == ("U01SRE0001", "U01SRE0002")
    assert policy.approvers.groups == ("S01SRETEAM",)
    prod = policy.rules[1].approvers
    assert prod is not None and prod.users == ("U01SRE0001", "U01SRE0002", "U01LEAD0001")
    assert policy.source == str(FIXTURES / "good" / "team.yml")


def test_no_file_means_the_safe_default() -> None:
    policy = load_policy(None)
    assert policy == Policy()
    assert policy.autonomous_max_tier is Tier.DRAFT and policy.source is None
    assert not (policy.approvers.users or policy.approvers.groups)


def test_expiry_defaults_survive_a_partial_override() -> None:
    policy = parse_policy("version: 1\ndefaults:\n  expiry: {3: 2h}\n")
    assert policy.expiry_s == {3: 7200, 4: 1800}


def test_incident_channels_match_ids_and_known_names() -> None:
    policy = load_policy(FIXTURES / "good" / "team.yml")
    assert policy.is_incident_channel(Channel(id="C01INCIDENT"))
    assert policy.is_incident_channel(Channel(id="C09", name="inc-db-latency"))
    assert policy.is_incident_channel("#INC-payments")  # Slack names are case-insensitive
    assert policy.is_incident_channel("C01INCIDENT")
    assert not policy.is_incident_channel(Channel(id="C09"))  # name unknown: ids only
    assert not policy.is_incident_channel(Channel(id="C09", name="general"))
    assert not Policy().is_incident_channel("C01INCIDENT")
    assert policy.slack_groups() == {"S01SRETEAM"}
    assert policy.is_pagerduty_bot("B01PAGERDT") and not policy.is_pagerduty_bot("B02OTHER")


def test_alert_routes_and_github_repos_pick_a_channel() -> None:
    policy = parse_policy("""version: 1
alert_routes:
  - match: {team: payments, severity: [critical, page]}
    channel: C01PAYMENTS
  - match: {team: "pay*"}
    channel: C01PAYLOW
  - channel: C01INCIDENT
github_repos:
  - repo: acme/shop
    channel: C01REVIEWS
    failures: false
  - repo: "acme/*"
    channel: C01CI
""", "p.yml")
    assert policy.alert_channel({"team": "payments", "severity": "page"}) == "C01PAYMENTS"
    assert policy.alert_channel({"team": "payments", "severity": "info"}) == "C01PAYLOW"
    assert policy.alert_channel({"alertname": "X"}) == "C01INCIDENT"
    assert Policy().alert_channel({"team": "payments"}) is None
    shop = policy.github_repo("ACME/shop")
    assert shop is not None and (shop.channel, shop.reviews, shop.failures) == (
        "C01REVIEWS", True, False)
    assert policy.github_repo("acme/api").channel == "C01CI"
    assert policy.github_repo("other/shop") is None


def test_many_errors_are_all_reported_sorted_by_line() -> None:
    text = "version: 1\nrules:\n  - name: x\n    match: {tier: 9}\n    tier: 12\n"
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yml")
    assert str(caught.value).splitlines() == [
        "p.yml:4: rules[0].match.tier: 9 is not a tier (0-4)",
        "p.yml:5: rules[0].tier: 12 is not a tier (0-4)",
    ]


def test_nested_aliases_are_walked_once() -> None:
    """A "billion laughs" file: 9**8 leaves if aliases were expanded while mapping lines."""
    rows = ["version: 1", 'a: &a ["x","x","x","x","x","x","x","x","x"]']
    pairs = zip("abcdefg", "bcdefgh", strict=True)
    rows += [f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]" for p, c in pairs]
    started = time.perf_counter()
    with pytest.raises(PolicyError) as caught:
        parse_policy("\n".join(rows), "bomb.yml")
    assert time.perf_counter() - started < 1.0
    assert [i.line for i in caught.value.issues] == list(range(2, 10))  # one per unknown key


def test_explain_prints_decision_tier_and_rule(capsys: pytest.CaptureFixture[str]) -> None:
    code = explain(
        "redis del k1 db=0", user="U01ALICE", channel="#incident-db", policy_path=str(EXAMPLE),
        redis_url=PROD_REDIS, groups=["S01ONCALL1"],
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:6] == [
        "decision: APPROVE",
        "action:   Delete 1 Redis key(s): k1",
        "target:   redis prod-cache-1:6379/0",
        "tier:     4 production (the action's own tier: 3 sandbox-execute)",
        f"rule:     prod-redis-changes ({EXAMPLE})",
        "channel:  matched channels entry `#incident-*`",
    ]
    assert lines[-2:] == [
        "approval: 2 of <@U01SRE0001>, <@U01SRE0002>, <@U01LEAD0001>, <!subteam^S01SRETEAM>; "
        "requester may approve: no",
        "expires:  20m",
    ]


def test_explain_a_hard_deny(capsys: pytest.CaptureFixture[str]) -> None:
    code = explain(
        "redis flushall", user="U01SRE0001", channel="C0OPS", policy_path=str(EXAMPLE),
        redis_url=PROD_REDIS,
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "decision: DENY\n" in out
    assert f"rule:     never-flushall-prod ({EXAMPLE})\n" in out
    assert (
        "reason:   `redis flushall` on redis prod-cache-1:6379/0 is denied by policy rule "
        "`never-flushall-prod`: FLUSHALL on production Redis is never allowed; delete specific "
        "keys instead.\n"
    ) in out


def test_explain_without_a_policy_file_uses_the_default(capsys: pytest.CaptureFixture[str]):
    assert explain("redis del keys=a", user="U1", channel="dm") == 0
    out = capsys.readouterr().out
    assert "rule:     default (built-in default policy)\n" in out
    assert "no approvers are configured because no policy file is loaded" in out


@pytest.mark.parametrize(
    ("command", "extra", "message"),
    [
        ("rdis info", {}, "Unknown command `rdis`. Did you mean `redis`? Try `help`."),
        ("why is redis slow?", {}, "`why is redis slow?` is not an action; explain takes "
         "`<toolset> <action> [key=value ...]`, e.g. `redis flushdb db=0`."),
        ("redis info", {"redis_url": "http://cache:6379"},
         "--redis-url must start with redis:// or rediss://"),
        ("redis info", {"policy_path": str(FIXTURES / "broken" / "deny_with_tier.yml")},
         f"{FIXTURES / 'broken' / 'deny_with_tier.yml'}:3: rules[0]: a `deny` rule denies "
         "outright; remove `tier`"),
    ],
    ids=["typo", "free-text", "bad-redis-url", "broken-policy"],
)
def test_explain_rejects_bad_input(
    command: str, extra: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert explain(command, user="U1", channel="C1", **extra) == 1
    assert capsys.readouterr() == ("", message + "\n")


def test_explain_channel_forms() -> None:
    assert parse_channel("dm").is_dm
    assert parse_channel("D0123").is_dm
    assert parse_channel("#incident-db").name == "incident-db"
    assert parse_channel("C0123") == Channel(id="C0123")


@pytest.mark.usefixtures("logging_restored")
def test_the_opsbot_cli_runs_check_and_explain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through ``opsbot policy ...`` itself: OPSBOT_POLICY and REDIS_URL come from settings."""
    from bot.cli import main

    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("OPSBOT_POLICY", str(EXAMPLE))
    monkeypatch.setenv("REDIS_URL", PROD_REDIS)
    assert main(["policy", "check", str(FIXTURES / "broken" / "bad_duration.yml")]) == 1
    assert capsys.readouterr().err.startswith(f"{FIXTURES / 'broken' / 'bad_duration.yml'}:5: ")
    argv = ["policy", "explain", "redis flushdb", "--user", "U01ALICE", "--channel", "C0123",
            "--channel-name", "incident-db", "--groups", "S01ONCALL1,S01OTHER"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("decision: APPROVE\n")
    assert "target:   redis prod-cache-1:6379/0\n" in out
    assert "channel:  matched channels entry `#incident-*`\n" in out
    assert f"rule:     prod-redis-changes ({EXAMPLE})\n" in out


# property tests: any file is a policy or a list of sentences; never an exception -------------

import yaml  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

POLICY_KEYS = ["version", "groups", "defaults", "autonomous_max_tier", "llm_autonomous_max_tier",
               "approvers", "approvals", "expiry", "requester_may_approve", "channels", "match",
               "deny_from_tier", "rules", "name", "deny", "tier", "toolset", "action", "target",
               "requesters", "users", "slack_groups", "groups", "from_tier", "redaction",
               "shapes", "extra", "incident_channels", "pagerduty_bot_ids", "kind", "host", "db"]
SCALARS = st.sampled_from([
    0, 1, 2, 3, 4, 7, -1, "production", "draft", "30m", "1h30m", "90", "2d", "8d", "U01SRE",
    "S01SRE", "B01PD", "#incident-*", "#ops", "C0OPS", "dm", "sre", "redis", "flushall", "*",
    "prod-*", "all", "none", "slack-token", "[a-", "a*", "ACME-[0-9]{4}", True, None, 1.5, "",
    "\u202e", "x" * 300,
]) | st.text(max_size=20) | st.integers()
policy_like = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(POLICY_KEYS) | st.integers(0, 5), inner, max_size=5),
    max_leaves=40)


def a_policy_or_sentences(text: str) -> None:
    try:
        assert isinstance(parse_policy(text), Policy)
    except PolicyError as e:
        lines = str(e).splitlines()
        assert lines and all(line.startswith("policy.yml") for line in lines), str(e)


@given(st.text(max_size=2000))
def test_any_text_is_a_policy_or_sentences(text):
    a_policy_or_sentences(text)


@given(st.dictionaries(st.sampled_from(POLICY_KEYS), policy_like, max_size=8),
       st.sampled_from([1, 1, 1, 2, "1", None]))
def test_any_policy_shaped_yaml_is_a_policy_or_sentences(body, version):
    text = yaml.safe_dump({"version": version, **body}, allow_unicode=True)
    a_policy_or_sentences(text)


@pytest.mark.parametrize("text", [
    "version: 1\na: &x [*x]\n",  # an alias to itself
    "version: 1\ngroups: !!python/object/apply:os.system ['true']\n",
    "version: 1\n" + "rules:\n" + "  - " * 1 + "[" * 5000,
    "version: 1\nlol: &a [1,1,1,1,1,1,1,1,1]\nlol2: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "lol3: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nlol4: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n",
    "\ufeffversion: 1\n", "version: 1\x00\n", "--- 1\n--- 2\n", "? [a]\n: b\n",
])
def test_hostile_yaml_is_sentences(text):
    a_policy_or_sentences(text)
