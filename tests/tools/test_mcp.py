"""MCP tools as catalog actions: tiers from annotations under the operator's floor, params
checked against the tool's JSON Schema, targets policy can match. Pure: no server runs here
(the scenarios in tests/scenarios/test_mcp.py run real ones in the sandbox)."""

import pytest
from pydantic import ValidationError

from graph.policy import Channel, Requester, Verdict, evaluate, parse_policy
from tools.base import Tier
from tools.catalog import Call, CallError, Catalog, parse_params
from tools.mcp import ServerEntry, ToolSpec, build_toolset, rejected, tool_tier

LOG = ToolSpec(name="git_log", description="Shows the commit logs",
               input_schema={"type": "object", "required": ["repo_path"],
                             "properties": {"repo_path": {"type": "string"},
                                            "max_count": {"type": "integer", "default": 10}}},
               read_only=True)


def entry(**more) -> ServerEntry:
    return ServerEntry(name="git", transport="stdio", command="python3",
                       args=["-m", "mcp_server_git"], **more)


@pytest.mark.parametrize("read_only, destructive, floor, expected", [
    (True, None, Tier.OBSERVE, Tier.OBSERVE),
    (None, False, Tier.OBSERVE, Tier.SANDBOX_EXECUTE),
    (None, None, Tier.OBSERVE, Tier.PRODUCTION),          # the spec's default: destructive
    (False, True, Tier.OBSERVE, Tier.PRODUCTION),
    (True, False, Tier.SANDBOX_EXECUTE, Tier.SANDBOX_EXECUTE),  # a read-only claim can't go under the floor
    (None, True, Tier.SANDBOX_EXECUTE, Tier.PRODUCTION),  # ...but can raise above it
])
def test_tier_from_annotations_never_below_the_floor(read_only, destructive, floor, expected):
    spec = ToolSpec(name="t", read_only=read_only, destructive=destructive)
    assert tool_tier(entry(floor=floor), spec) == expected


def test_operator_override_wins_over_annotations():
    spec = ToolSpec(name="git_reset", destructive=True)
    assert tool_tier(entry(tiers={"git_reset": 2}), spec) == Tier.DRAFT


def test_params_follow_the_schema_with_typed_command_coercion():
    action = build_toolset(entry(), [LOG]).action("git_log")
    params = action.params.model_validate(parse_params(action.params, ["/repo", "max_count=5"],
                                                       "git git_log"))
    assert params.model_dump(mode="json") == {"repo_path": "/repo", "max_count": 5}
    assert action.params.model_json_schema() == LOG.input_schema  # what the LLM is shown
    with pytest.raises(ValidationError, match="max_count: 'many' is not of type 'integer'"):
        action.params.model_validate({"repo_path": "/r", "max_count": "many"})
    with pytest.raises(ValidationError, match="'repo_path' is a required property"):
        action.params.model_validate({})


def test_allow_list_and_bad_tool_names():
    odd = ToolSpec(name="has.dot", read_only=True)
    toolset = build_toolset(entry(tools=("git_l*",)), [LOG, ToolSpec(name="git_reset"), odd])
    assert [a.name for a in toolset.actions] == ["git_log"]
    reasons = rejected(entry(), [odd])
    assert "letters, digits" in reasons["has.dot"]


def test_catalog_resolves_a_data_built_toolset_and_policy_matches_kind_mcp():
    server = entry(tiers={"git_commit": 3})
    commit = ToolSpec(name="git_commit", input_schema={
        "type": "object", "required": ["repo_path", "message"],
        "properties": {"repo_path": {"type": "string"}, "message": {"type": "string"}}})
    catalog = Catalog([], {})
    before = catalog.generation
    catalog.install(build_toolset(server, [LOG, commit]), server)
    assert catalog.generation == before + 1
    call = Call(id="c1", toolset="git", action="git_commit",
                params={"repo_path": "/repo", "message": "fix"})
    resolved = catalog.resolve(call)
    assert str(resolved.target) == "mcp git git_commit"
    assert resolved.target.attrs == {"server": "git", "tool": "git_commit", "transport": "stdio"}
    assert resolved.canonical["params"] == {"repo_path": "/repo", "message": "fix"}
    policy = parse_policy("""\
version: 1
groups: {sre: {users: [U0SRE]}}
defaults: {autonomous_max_tier: 3, approvers: [sre]}
rules:
  - name: git-writes
    match: {target: {kind: mcp, server: git, tool: git_commit}}
    tier: 4
""", toolsets=list(catalog.toolsets.values()))
    decision = evaluate(policy, catalog, call, Requester(user="U1"), Channel(id="C1"))
    assert decision.verdict is Verdict.APPROVE and decision.tier == Tier.PRODUCTION
    read = Call(id="c2", toolset="git", action="git_log", params={"repo_path": "/repo"})
    assert evaluate(policy, catalog, read, Requester(user="U1"), Channel(id="C1")).verdict \
        is Verdict.ALLOW
    with pytest.raises(CallError, match="repo_path"):
        catalog.resolve(Call(id="c3", toolset="git", action="git_log", params={}))


@pytest.mark.parametrize("bad, message", [
    ({"transport": "stdio"}, "needs `command`"),
    ({"transport": "http", "url": "ftp://x"}, "needs `url`"),
    ({"transport": "stdio", "command": "x", "env": {"TOKEN": "plain-secret"}},
     "kv/data/<path>#<key>"),
    ({"transport": "stdio", "command": "x", "name": "Bad Name"}, "lowercase"),
])
def test_server_entries_are_checked(bad, message):
    with pytest.raises(ValidationError, match=message):
        ServerEntry.model_validate({"name": "s", **bad})


def test_policy_check_knows_the_mcp_servers_of_opsbot_mcp(tmp_path, capsys, monkeypatch,
                                                          logging_restored):
    from bot.cli import main

    (tmp_path / "mcp.yml").write_text("version: 1\nservers:\n  - {name: git, transport: stdio, "
                                      "command: python3}\n")
    (tmp_path / "policy.yml").write_text(
        "version: 1\ngroups: {sre: {users: [U0SRE]}}\ndefaults: {approvers: [sre]}\nrules:\n"
        "  - name: git-writes\n    match: {toolset: git, action: git_commit}\n    tier: 4\n")
    monkeypatch.chdir(tmp_path)
    assert main(["policy", "check", "policy.yml"]) == 1  # without OPSBOT_MCP: no such toolset
    assert "`git` matches no toolset" in capsys.readouterr().err
    monkeypatch.setenv("OPSBOT_MCP", str(tmp_path / "mcp.yml"))
    assert main(["policy", "check", "policy.yml"]) == 0
    assert "ok: 1 rule" in capsys.readouterr().out


def test_a_bad_mcp_file_is_one_sentence_at_boot(tmp_path):
    from graph.mcp import MCPConfigError, load_servers

    path = tmp_path / "mcp.yml"
    path.write_text("version: 1\nservers:\n  - {name: git, transport: http}\n")
    with pytest.raises(MCPConfigError, match=r"servers\[0\] \(git\): an http server needs `url`"):
        load_servers(path)
    path.write_text("version: 1\nservers:\n  - {name: redis, transport: stdio, command: x}\n")
    with pytest.raises(MCPConfigError, match="name of a built-in toolset"):
        load_servers(path, reserved=["redis"])


def test_a_server_that_lies_about_its_schema_gets_a_sentence_not_a_crash():
    liar = ToolSpec(name="weird", input_schema={"type": "object",
                                                "properties": {"x": {"type": "nonsense"}}})
    action = build_toolset(entry(), [liar]).action("weird")
    with pytest.raises(ValidationError, match="the server's input schema is invalid"):
        action.params.model_validate({"x": 1})
    not_an_object = ToolSpec(name="listy", input_schema={"type": "array"})
    assert "not an object schema" in rejected(entry(), [not_an_object])["listy"]


def test_only_secretless_stdio_servers_are_started_ahead():
    from tools.mcp import prestart_command

    assert prestart_command(entry())[-2:] == ["--mcp", entry().model_dump_json()]
    before = build_toolset(entry(), [LOG]).warm(entry())
    after = build_toolset(entry(), [LOG, ToolSpec(name="git_show")]).warm(entry())
    assert before != after  # a server that lists other tools gets fresh warm containers
    assert prestart_command(entry(env={"TOKEN": "kv/data/x#token"})) is None  # minted per call
    http = ServerEntry(name="h", transport="http", url="https://mcp.example.com/mcp")
    assert prestart_command(http) is None
