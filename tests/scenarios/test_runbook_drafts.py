"""Issue 14 item 6, "Save as runbook": a report of a run that changed something carries the
button; a click drafts the runbook from the run's record as a file under
OPSBOT_RUNBOOK_DRAFTS, or as a draft PR in OPSBOT_RUNBOOK_REPO through the GitHub connector,
audited; runs with nothing to learn from and forged values draft nothing."""

from __future__ import annotations

import json
import re

import pytest

from bot.blocks import SAVE_RUNBOOK_ACTION
from tests.fakes.payloads import block_actions
from tests.scenarios.harness import APPROVER, CHANNEL, LEAD, RUN_ID, harness, settings_for
from tests.tools.test_github import TOKEN
from tools.runbooks.files import parse_runbook

pytestmark = pytest.mark.docker
pytest_plugins = ["tests.fakes.github"]  # the `github_api` fixture
GHE = "github.example.test"


def save_button(report) -> str | None:
    found = [e for b in report.blocks if b["type"] == "actions" for e in b["elements"]
             if e.get("action_id") == SAVE_RUNBOOK_ACTION]
    return found[0]["value"] if found else None


async def approved_flush(h, redis_db, index: int):
    """``redis flushdb`` (the ``index``-th run), approved and reported: (thread, report, run)."""
    redis_db.set("k", "v")
    await h.command("redis flushdb")
    thread = await h.run_thread(index)
    await h.click(await h.card(thread), APPROVER)
    changed = await h.report(thread)
    return thread, changed, RUN_ID.search(changed.text).group(1)


async def click_save(h, report, value: str, user: str = LEAD):
    await h.post(block_actions(user=user, channel=CHANNEL, message_ts=report.ts,
                               action_id=SAVE_RUNBOOK_ACTION, block_id=SAVE_RUNBOOK_ACTION,
                               value=value, slack=h.slack))


async def test_a_change_is_saved_as_a_runbook_draft_and_a_read_is_not(
        slack_emulator, redis_server, redis_db, sandbox_image, tmp_path):
    drafts = tmp_path / "runbooks" / "drafts"
    settings = settings_for(slack_emulator, redis_server.url, tmp_path / "data",
                            runbook_drafts=drafts)
    async with harness(settings, slack_emulator) as h:
        await h.command("redis info section=server")
        read = await h.report(await h.run_thread(0))
        assert save_button(read) is None, "a typed read has nothing to make a runbook of"

        thread, changed, run_id = await approved_flush(h, redis_db, 1)
        assert save_button(changed) == run_id

        await click_save(h, changed, run_id)
        told = await h.ephemeral(LEAD, "Drafted")
        [path] = drafts.glob("*.md")
        assert str(path) in told and path.name.endswith(f"-{run_id}.md")
        meta, body = parse_runbook(path.read_text())
        assert "draft" in meta.tags and meta.title
        assert "## What was done" in body and ": ok" in body and run_id in body
        rows = await h.bot.runtime.records.audit.rows(("runbook.drafted",), run_id=run_id)
        assert [(r["actor"], r["data"]["path"]) for r in rows] == [(LEAD, str(path))]

        read_id = RUN_ID.search(read.text).group(1)
        await click_save(h, changed, read_id)  # a value naming another, uninteresting run
        assert "nothing to draft" in await h.ephemeral(LEAD, "nothing to draft")
        await click_save(h, changed, "../../etc/passwd")
        assert "malformed" in await h.ephemeral(LEAD, "malformed")
        assert list(drafts.glob("*.md")) == [path]


async def test_with_a_runbooks_repository_the_draft_is_proposed_as_a_draft_pr(
        slack_emulator, redis_server, redis_db, sandbox_image, tmp_path, github_api):
    """OPSBOT_RUNBOOK_REPO: the click starts a run in the report's thread whose one call is
    the GitHub connector's draft_pr (tier 2, autonomous under this policy, the clicker its
    requester), run in the sandbox against the GitHub emulator; a second click finds the same
    PR open. No file is written, and the PR's own report offers no runbook of itself."""
    github_api.tokens.add(TOKEN)
    github_api.host = GHE  # a GitHub Enterprise by name: its answers' URLs name it too
    repo = github_api.add_repo("acme/runbooks", files={"README.md": "Runbooks\n"})
    drafts = tmp_path / "runbooks" / "drafts"
    settings = settings_for(slack_emulator, redis_server.url, tmp_path / "data",
                            runbook_drafts=drafts, runbook_repo="acme/runbooks",
                            github_token=TOKEN, github_api_url=github_api.url,
                            egress_hosts={GHE: "127.0.0.1"})
    async with harness(settings, slack_emulator) as h:
        thread, changed, run_id = await approved_flush(h, redis_db, 0)
        pr_run = await proposed(h, changed, run_id, 1)
        pr_report = await run_report(h, thread, pr_run)
        [pull] = repo.pulls.values()
        assert pull["draft"] and pull["head"] == f"opsbot/runbook-{run_id}"
        assert f"#{pull['number']}" in pr_report.text and save_button(pr_report) is None
        [path] = [p for p in repo.files_at(pull["head"]) if p.startswith("runbooks/drafts/")]
        meta, body = parse_runbook(repo.blobs[repo.files_at(pull["head"])[path]].decode())
        assert path.endswith(f"-{run_id}.md") and "draft" in meta.tags and run_id in body

        rows = await h.bot.runtime.records.audit.rows(("runbook.drafted",), run_id=run_id)
        assert [(r["actor"], r["data"]["repo"], r["data"]["pr_run"]) for r in rows] == [
            (LEAD, "acme/runbooks", pr_run)]
        story = await h.bot.runtime.records.audit.story(pr_run)
        assert [r["data"]["verdict"] for r in story if r["kind"] == "policy"] == ["allow"]
        assert [r["actor"] for r in story if r["kind"] == "task"] == [LEAD]

        again = await proposed(h, changed, run_id, 2)  # the same PR, nothing new to commit
        assert "Already open" in json.dumps((await run_report(h, thread, again)).blocks)
        assert len(repo.pulls) == 1 and not drafts.exists()


async def proposed(h, report, run_id: str, clicks: int) -> str:
    """Click "Save as runbook" (the ``clicks``-th time); the id of the run proposing the PR."""
    await click_save(h, report, run_id)

    def answer() -> str | None:
        said = [e.text for e in h.slack.ephemerals(LEAD) if "as a draft PR" in e.text]
        return said[clicks - 1] if len(said) >= clicks else None

    told = await h.slack.wait_for(answer)
    return re.search(r"run `(r-[0-9a-f]{8})` in this thread", told).group(1)


async def run_report(h, thread: str, run_id: str):
    return (await h.slack.wait_for(lambda: [
        m for m in h.slack.thread(CHANNEL, thread) if f"*Run `{run_id}`" in m.text], 60))[0]
