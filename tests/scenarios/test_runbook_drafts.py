"""Issue 14 item 6, "Save as runbook": a report of a run that changed something carries the
button; a click drafts the runbook from the run's record as a file under
OPSBOT_RUNBOOK_DRAFTS, audited; runs with nothing to learn from and forged values draft
nothing."""

from __future__ import annotations

import pytest

from bot.blocks import SAVE_RUNBOOK_ACTION
from tests.fakes.payloads import block_actions
from tests.scenarios.harness import APPROVER, CHANNEL, LEAD, RUN_ID, harness, settings_for
from tools.runbooks.files import parse_runbook

pytestmark = pytest.mark.docker


def save_button(report) -> str | None:
    found = [e for b in report.blocks if b["type"] == "actions" for e in b["elements"]
             if e.get("action_id") == SAVE_RUNBOOK_ACTION]
    return found[0]["value"] if found else None


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

        redis_db.set("k", "v")
        await h.command("redis flushdb")
        thread = await h.run_thread(1)
        await h.click(await h.card(thread), APPROVER)
        changed = await h.report(thread)
        run_id = RUN_ID.search(changed.text).group(1)
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
