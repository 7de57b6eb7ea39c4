"""Issue 14 item 3: every final report carries 👍 / 👎 (``feedback_buttons``); a 👎 with a
comment (the modal it opens) is stored with the run, audited, counted in ``GET /metrics`` and
listed first by ``opsbot feedback``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bot.blocks import FEEDBACK_ACTION, FEEDBACK_COMMENT, FEEDBACK_VIEW
from tests.fakes.payloads import view_submission
from tests.fakes.payloads_ai import feedback_click
from tests.scenarios.harness import APPROVER, CHANNEL, REQUESTER, RUN_ID, harness, settings_for
from tests.scenarios.test_metrics import scrape

pytestmark = pytest.mark.docker


def buttons(report) -> dict[str, str]:
    [block] = [b for b in report.blocks if b["type"] == "context_actions"]
    [element] = block["elements"]
    assert element["type"] == "feedback_buttons" and element["action_id"] == FEEDBACK_ACTION
    return {"up": element["positive_button"]["value"], "down": element["negative_button"]["value"]}


async def ran(h, command: str, index: int):
    await h.command(command)
    return await h.report(await h.run_thread(index))


async def test_a_thumbs_down_with_a_comment_is_stored_audited_counted_and_listed_first(
        slack_emulator, redis_server, sandbox_image, tmp_path):
    settings = settings_for(slack_emulator, redis_server.url, tmp_path / "data")
    async with harness(settings, slack_emulator) as h:
        before, _ = await scrape(h.bot.url)
        liked = await ran(h, "redis info section=server", 0)
        disliked = await ran(h, "redis info section=memory", 1)
        liked_id, disliked_id = (RUN_ID.search(r.text).group(1) for r in (liked, disliked))
        assert liked_id != disliked_id

        await h.post(feedback_click(user=APPROVER, channel=CHANNEL, message_ts=liked.ts,
                                    action_id=FEEDBACK_ACTION, value=buttons(liked)["up"],
                                    slack=h.slack))
        await h.ephemeral(APPROVER, "👍 on run")
        await h.post(feedback_click(user=REQUESTER, channel=CHANNEL, message_ts=disliked.ts,
                                    action_id=FEEDBACK_ACTION, value=buttons(disliked)["down"],
                                    slack=h.slack))
        await h.ephemeral(REQUESTER, "👎 on run")
        [modal] = await h.slack.wait_for(lambda: h.slack.views())
        assert modal.view["callback_id"] == FEEDBACK_VIEW
        await h.post(view_submission(
            user=REQUESTER, callback_id=FEEDBACK_VIEW, view_id=modal.id, slack=h.slack,
            private_metadata=modal.view["private_metadata"],
            values={FEEDBACK_COMMENT: {FEEDBACK_COMMENT: {
                "type": "plain_text_input", "value": "It read the wrong section."}}}))
        await h.ephemeral(REQUESTER, "comment on run")

        rows = await h.bot.runtime.records.feedback.since()
        assert {(r.run_id, r.user, r.rating, r.comment) for r in rows} == {
            (liked_id, APPROVER, "up", ""),
            (disliked_id, REQUESTER, "down", "It read the wrong section.")}
        audit = await h.bot.runtime.records.audit.rows(("feedback", "feedback.comment"),
                                                       run_id=disliked_id)
        assert sorted((r["kind"], r["actor"]) for r in audit) == [
            ("feedback", REQUESTER), ("feedback.comment", REQUESTER)]
        after, _ = await scrape(h.bot.url)
        down = ("opsbot_feedback_total", frozenset({("rating", "down")}))
        comments = ("opsbot_feedback_comments_total", frozenset({("rating", "down")}))
        assert after[down] == before.get(down, 0) + 1
        assert after[comments] == before.get(comments, 0) + 1

    listed = subprocess.run(
        [sys.executable, "-m", "bot.cli", "feedback", "--since", "1d"], capture_output=True,
        text=True, timeout=60, check=True,
        env={**os.environ, "OPSBOT_DATA_DIR": str(settings.data_dir)}).stdout.splitlines()
    assert listed[0].startswith(f"{disliked_id}  👎 1  👍 0  {CHANNEL}"), listed
    assert listed[1] == f"    {REQUESTER} 👎 It read the wrong section."
    assert listed[2].startswith(f"{liked_id}  👎 0  👍 1"), listed
