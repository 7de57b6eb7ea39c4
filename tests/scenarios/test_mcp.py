"""MCP servers behind opsbot's gate, end to end: the whole bot over HTTP with the Slack
emulator, real MCP servers (the reference ``mcp-server-git`` and ``mcp-server-time`` from PyPI,
and test servers built with the ``mcp`` library) running over stdio *inside* sandbox
containers, declared in an ``OPSBOT_MCP`` file.

One bot serves the whole module (listing five servers costs a few containers); each test
works in a channel of its own so their threads never mix.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import secrets
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from graph.surface import RunState
from tests.fakes.slack import SlackEmulator
from tests.scenarios.process import AuditFile, dump_database
from tests.scenarios.harness import APPROVER, LEAD, RUN_ID, harness, settings_for
from tests.fakes.server import wait_until
from tests.services.docker import leftovers
from tools.mcp import GRACE_S, LIST_MIN_S

pytestmark = pytest.mark.docker

FAKES = Path(__file__).resolve().parent.parent / "fakes" / "mcp_servers"
SANDBOX_UID = 65534
MCP_FILE = """\
version: 1
servers:
  - name: git
    transport: stdio
    command: python3
    args: [-m, mcp_server_git, --repository, /repo]
    vars: {{GIT_AUTHOR_NAME: opsbot, GIT_AUTHOR_EMAIL: opsbot@example.com,
            GIT_COMMITTER_NAME: opsbot, GIT_COMMITTER_EMAIL: opsbot@example.com}}
    mounts: [{{source: {repo}, target: /repo, writable: true}}]
  - name: time
    transport: stdio
    command: python3
    args: [-m, mcp_server_time, --local-timezone, UTC]
  - name: db
    transport: stdio
    command: python3
    args: [/srv/mcp/destructive.py]
    vars: {{LEDGER: /ledger/calls.log}}
    mounts: [{{source: {fakes}, target: /srv/mcp}}, {{source: {ledger}, target: /ledger, writable: true}}]
  - name: shady
    transport: stdio
    command: python3
    args: [/srv/mcp/malicious.py]
    floor: 3
    tiers: {{flood: 0, hang: 0, crash: 0}}
    timeout: 10
    mounts: [{{source: {fakes}, target: /srv/mcp}}]
  - name: mute
    transport: stdio
    command: python3
    args: [/srv/mcp/silent.py]
    timeout: 3
    mounts: [{{source: {fakes}, target: /srv/mcp}}]
"""
# Git writes are for the leads only: the rule (target kind mcp) both gates them and names who
# may approve, so an SRE's refused click shows the rule is what decided.
MCP_POLICY = f"""\
version: 1
groups:
  sre: {{users: [{APPROVER}, {LEAD}]}}
  leads: {{users: [{LEAD}]}}
defaults:
  autonomous_max_tier: 2
  approvers: [sre]
rules:
  - name: git-writes
    match: {{target: {{kind: mcp, server: git, tool: [git_commit, git_reset]}}}}
    tier: 4
    approvers: [leads]
"""
CHANNELS = (f"C0MCP{i}" for i in itertools.count())


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "safe.directory=*", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def make_repo(repo: Path) -> None:
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("hello\n")
    git(repo, "add", "README.md")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "first")
    (repo / "README.md").write_text("hello\nworld\n")
    (repo / "notes.txt").write_text("staged\n")
    git(repo, "add", "notes.txt")
    subprocess.run(["chown", "-R", f"{SANDBOX_UID}:{SANDBOX_UID}", str(repo)], check=True)


@pytest.fixture(scope="module")
async def bot(redis_server, sandbox_image, tmp_path_factory):
    root = tmp_path_factory.mktemp("mcp")
    make_repo(root / "repo")
    ledger = root / "ledger"
    ledger.mkdir()
    ledger.chmod(0o777)
    servers = root / "mcp.yml"
    servers.write_text(MCP_FILE.format(repo=root / "repo", fakes=FAKES, ledger=ledger))
    with SlackEmulator() as slack:
        settings = settings_for(slack, redis_server.url, root / "data", MCP_POLICY, mcp=servers)
        began, running_since = time.monotonic(), int(time.time()) - 1
        async with harness(settings, slack) as running:
            running.since = running_since
            running.boot_s = time.monotonic() - began
            running.repo, running.ledger = root / "repo", ledger / "calls.log"
            yield running


@pytest.fixture
def h(bot):
    bot.channel = next(CHANNELS)
    bot.slack.add_channel(bot.channel, bot.channel.lower())
    return bot


async def report_row(h, thread_ts: str) -> dict:
    """The run's audited report (written just after the Slack report is posted)."""
    run_id = RUN_ID.search(h.slack.message(h.channel, thread_ts).text).group(1)
    rows = await h.slack.wait_for(lambda: h.bot.runtime.audit.rows(("report",), run_id), 10)
    return rows[0]["data"]


async def started(h, text: str, user: str = "UREQ1") -> str:
    """The thread of the run that ``text`` starts (runs before it in the channel skipped)."""
    before = len([m for m in h.top_level() if "opsbot" in m.text])
    await h.command(text, user=user)
    return await h.run_thread(index=before)


async def run(h, text: str, user: str = "UREQ1") -> tuple[str, dict]:
    thread = await started(h, text, user)
    await h.report(thread)
    return thread, await report_row(h, thread)


def execs(h, action: str) -> list[dict]:
    rows = AuditFile(h.bot.runtime.settings.data_dir).rows("sandbox.exec")
    return [r["data"] for r in rows if r["data"]["action"] == action]


@contextmanager
def container_events(docker_client, instance: str, event: str) -> Iterator[dict[str, dict]]:
    """Container id -> event (``from`` image, labels) for every container of ``instance`` that
    had ``event`` meanwhile, read from the engine's live stream (its stored history is a small
    ring shared by every user of the engine)."""
    seen: dict[str, dict] = {}
    stream = docker_client.events(decode=True, filters={
        "type": "container", "event": event, "label": f"opsbot.instance={instance}"})

    def read() -> None:
        with suppress(Exception):  # closing the stream ends the loop
            for item in stream:
                seen[item["id"]] = item

    threading.Thread(target=read, daemon=True).start()
    try:
        yield seen
    finally:
        stream.close()


async def test_git_reads_run_at_tier_0_inside_sandbox_containers(h, docker_client):
    instance = h.bot.runtime.sandbox.config.instance
    with container_events(docker_client, instance, "start") as starts:
        await _git_reads(h)
        ran = [r["container"] for r in execs(h, "git git_status") + execs(h, "git git_log")]
        await wait_until(lambda: all(c in starts for c in ran), 10, lambda: str(starts))
    assert all(starts[c]["from"].startswith("opsbot-sandbox:") for c in ran)  # sandbox image
    status = git(h.repo, "status", "--porcelain")
    assert "A  notes.txt" in status and " M README.md" in status  # reads changed nothing
    listing = (await h.command("help git")).body
    assert "git git_status <repo_path>" in listing and "(tier 0 observe)" in listing
    assert "git git_reset <repo_path>" in listing and "(tier 4 production)" in listing


async def _git_reads(h) -> None:
    for tool, needle in (("git_status", "README.md"), ("git_log", "first"),
                         ("git_diff_unstaged", "+world")):
        _, report = await run(h, f"git {tool} repo_path=/repo")
        (call,) = report["calls"]
        assert call["status"] == "ok" and needle in call["output"], call
        assert not any(m.blocks and "approval:" in str(m.blocks) for m in h.slack.messages(h.channel))


async def test_git_commit_is_gated_by_the_policy_rule_and_runs_once_approved(h):
    thread = await started(h, 'git git_commit repo_path=/repo message="opsbot commit"')
    card = await h.card(thread)
    assert "git-writes" in str(card.blocks) and "tier 4" in card.text.lower() + str(card.blocks)
    await h.click(card, APPROVER)  # an SRE, but the rule names only the leads
    assert "can't approve" in await h.ephemeral(APPROVER, "approve")
    assert "opsbot commit" not in git(h.repo, "log", "--format=%s")
    await h.click(card, LEAD)
    await h.report(thread)
    assert git(h.repo, "log", "-1", "--format=%s").strip() == "opsbot commit"


async def test_git_reset_denied_changes_nothing(h):
    (h.repo / "extra.txt").write_text("x\n")
    subprocess.run(["chown", f"{SANDBOX_UID}:{SANDBOX_UID}", str(h.repo / "extra.txt")], check=True)
    git(h.repo, "add", "extra.txt")
    thread = await started(h, "git git_reset repo_path=/repo")
    card = await h.card(thread)
    await h.deny(card, LEAD, reason="keep it staged")
    report = await h.report(thread)
    assert "keep it staged" in report.text
    assert "A  extra.txt" in git(h.repo, "status", "--porcelain")
    assert execs(h, "git git_reset") == []


async def test_time_server_read_only_tool_runs_without_approval(h):
    _, report = await run(h, "time get_current_time timezone=UTC")
    (call,) = report["calls"]
    assert call["status"] == "ok" and '"timezone": "UTC"' in call["output"]
    assert report["state"] == RunState.DONE.value


async def test_destructive_tool_approved_runs_exactly_once(h):
    thread = await started(h, "db drop_table table=orders")
    card = await h.card(thread)
    assert not h.ledger.exists() or "orders" not in h.ledger.read_text()
    value = h.button_value(card)
    await h.click(card, APPROVER)
    await h.click(card, LEAD, value=value)  # a late second click changes nothing
    assert "already approved" in await h.ephemeral(LEAD, "already")
    await h.report(thread)
    assert h.ledger.read_text().count("drop orders") == 1


async def test_destructive_tool_denied_never_runs(h):
    thread = await started(h, "db drop_table table=users")
    await h.deny(await h.card(thread), APPROVER, reason="no")
    await h.report(thread)
    assert "users" not in (h.ledger.read_text() if h.ledger.exists() else "")
    assert all(e["params"] != {"table": "users"} for e in execs(h, "db drop_table"))


async def test_lying_read_only_annotation_is_still_gated_by_the_floor(h):
    thread = await started(h, "shady delete_everything")
    card = await h.card(thread)
    assert "3 sandbox-execute" in str(card.blocks)
    await h.deny(card, APPROVER)
    await h.report(thread)
    assert execs(h, "shady delete_everything") == []


async def test_a_5mb_answer_is_cut(h):
    _, report = await run(h, "shady flood")
    (call,) = report["calls"]
    assert call["status"] == "ok" and "more characters cut by opsbot" in call["output"], call
    assert len(call["output"]) < 100_000


async def test_a_tool_that_never_answers_times_out_and_leaves_no_container(h, docker_client):
    _, report = await run(h, "shady hang")
    (call,) = report["calls"]
    assert "did not answer within 10 s" in call["output"], call
    await h.bot.runtime.sandbox.settle()
    (row,) = execs(h, "shady hang")
    assert leftovers(docker_client, row["call_id"]) == []


async def test_a_server_that_crashes_mid_call_is_a_sentence_and_leaves_nothing(
        h, docker_client):
    _, report = await run(h, "shady crash")
    (call,) = report["calls"]
    assert call["status"] == "error"
    assert "The MCP server `shady` failed or closed the connection" in call["output"]
    await h.bot.runtime.sandbox.settle()
    (row,) = execs(h, "shady crash")
    assert leftovers(docker_client, row["call_id"]) == []


async def test_a_silent_server_is_reported_unavailable_and_did_not_hold_up_the_boot(h):
    assert "mute" in h.bot.runtime.mcp.problems
    assert f"did not answer within {LIST_MIN_S:g} s" in h.bot.runtime.mcp.problems["mute"]
    assert h.boot_s < LIST_MIN_S + GRACE_S + 30
    help_text = (await h.command("help mute")).body
    assert "unavailable" in help_text



LLM_SERVERS = """\
version: 1
servers:
  - name: db
    transport: stdio
    command: python3
    args: [/srv/mcp/destructive.py]
    vars: {{LEDGER: /ledger/calls.log}}
    mounts: [{{source: {fakes}, target: /srv/mcp}}, {{source: {ledger}, target: /ledger, writable: true}}]
"""


async def test_the_llm_agent_calls_mcp_tools_through_the_same_gate(
        slack_emulator, redis_server, sandbox_image, tmp_path, llm_api):
    from tests.fakes.openai import text, tool_call, tool_results
    from tests.scenarios.llm_harness import mention, running_llm_bot

    ledger = tmp_path / "ledger"
    ledger.mkdir()
    ledger.chmod(0o777)
    servers = tmp_path / "mcp.yml"
    servers.write_text(LLM_SERVERS.format(fakes=FAKES, ledger=ledger))
    llm_api.push(tool_call("db__count_rows", {"table": "sessions"}),
                 tool_call("db__drop_table", {"table": "sessions"}),
                 text("The sessions table had 42 rows and is now dropped."))
    async with running_llm_bot(slack_emulator, redis_server.url, tmp_path, llm_api, None,
                               mcp=servers) as hl:
        thread = await mention(hl, "count the sessions rows, then drop that table")
        card = await hl.card(thread)
        tools = {t["function"]["name"]: t["function"] for t in
                 llm_api.requests()[0].body["tools"]}
        assert tools["db__drop_table"]["description"].startswith("[tier 4] (MCP server `db`)")
        assert tools["db__count_rows"]["parameters"]["required"] == ["table"]
        assert not (ledger / "calls.log").exists()  # the model's call waits like a typed one
        await hl.click(card, APPROVER)
        report = await hl.report(thread)
    assert "now dropped" in report.text
    assert (ledger / "calls.log").read_text() == "drop sessions\n"
    results = [tool_results(r.body) for r in llm_api.requests()[1:]]
    said = json.dumps(results)
    assert "sessions: 42 rows" in said and "dropped sessions" in said


LEAKY_SERVER = """\
version: 1
servers:
  - name: leaky
    transport: stdio
    command: python3
    args: [/srv/mcp/leaky.py]
    env: {{CANARY: kv/data/mcp/canary#value}}
    mounts: [{{source: {fakes}, target: /srv/mcp}}]
"""


async def test_server_secrets_come_from_vault_per_call_and_never_leave(
        slack_emulator, redis_server, openbao, sandbox_image, tmp_path):
    from tests.scenarios.test_vault_e2e import parent_token

    canary = "mcp-canary-" + secrets.token_hex(12)
    openbao.put("kv/data/mcp/canary", value=canary)
    servers = tmp_path / "mcp.yml"
    servers.write_text(LEAKY_SERVER.format(fakes=FAKES))
    settings = settings_for(slack_emulator, redis_server.url, tmp_path / "data", MCP_POLICY,
                            mcp=servers, vault_addr=openbao.addr,
                            vault_token=parent_token(openbao))
    async with harness(settings, slack_emulator) as h:
        _, report = await run(h, "leaky has_canary")
        assert report["calls"][0]["output"] == f"canary set, {len(canary)} characters"
        _, report = await run(h, "leaky leak")
        assert report["calls"][0]["output"] == "here it is: [redacted]"
        leases = len(AuditFile(h.bot.runtime.settings.data_dir).rows("credential.lease"))
        assert leases >= 2  # minted for each call (and for the listing at boot)
        dump = dump_database(h.bot.runtime.settings.data_dir / "opsbot.sqlite")
    assert canary not in dump
    assert canary not in slack_emulator.all_text()


@pytest.fixture
async def http_mcp_server():
    """The destructive test server over streamable HTTP on the host's loopback."""
    import socket

    import uvicorn

    from tests.fakes.mcp_servers.destructive import server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    web = uvicorn.Server(uvicorn.Config(server.streamable_http_app(), host="127.0.0.1",
                                        port=port, log_level="warning", lifespan="on"))
    serving = asyncio.ensure_future(web.serve())
    await wait_until(lambda: web.started, 10, lambda: "uvicorn did not start")
    yield f"http://127.0.0.1:{port}/mcp"
    web.should_exit = True
    await serving


async def test_an_http_server_is_called_from_the_sandbox_through_its_egress(
        slack_emulator, redis_server, sandbox_image, tmp_path, http_mcp_server):
    servers = tmp_path / "mcp.yml"
    servers.write_text(f"version: 1\nservers:\n  - {{name: remote, transport: http, "
                       f"url: '{http_mcp_server}'}}\n")
    settings = settings_for(slack_emulator, redis_server.url, tmp_path / "data", MCP_POLICY,
                            mcp=servers)
    async with harness(settings, slack_emulator) as h:
        assert "remote" not in h.bot.runtime.mcp.problems
        _, report = await run(h, "remote count_rows table=orders")
        (row,) = execs(h, "remote count_rows")
    assert report["calls"][0]["output"] == "orders: 42 rows"
    assert row["network"] != "none"  # its own network, reaching only the declared endpoint


async def test_a_secretless_stdio_server_is_started_ahead_in_a_pooled_container(
        h, docker_client):
    pool = h.bot.runtime.sandbox.pool
    instance = h.bot.runtime.sandbox.config.instance
    with container_events(docker_client, instance, "create") as created:
        for _ in range(2):  # the first sight of the server adds its pool kind (and may go cold)
            await run(h, "time get_current_time timezone=UTC")
            await pool.wait_ready()
        row = execs(h, "time get_current_time")[-1]
        await wait_until(lambda: row["container"] in created, 10, lambda: str(created))
    (kind,) = [k for k in pool.kinds() if k.family == "time"]
    assert "--mcp" in kind.command
    labels = created[row["container"]]["Actor"]["Attributes"]
    assert labels["opsbot.pool"] == kind.name  # made ahead, for this server


async def test_a_refresh_picks_up_tools_a_server_added(h):
    catalog = h.bot.runtime.catalog
    assert catalog.toolsets["db"].action("newer") is None
    await run(h, "db count_rows table=t")  # the server's warm kind exists from here on
    generation = catalog.generation
    (h.ledger.parent / "grown").write_text("")
    problems = await h.bot.runtime.mcp.refresh(only=["db"])
    assert "db" not in problems and catalog.generation > generation
    assert catalog.toolsets["db"].action("newer").tier == 0
    _, report = await run(h, "db newer")
    assert report["calls"][0]["output"] == "new"
    pool = h.bot.runtime.sandbox.pool
    assert len([k for k in pool.kinds() if k.family == "db"]) == 1  # the stale kind retired
