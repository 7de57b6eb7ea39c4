"""Issue 14 item 4: the App Home tab, published when opened: the viewer's pending approvals
with the card's buttons (a click there decides like one on the card), their active runs, and
recent runs in their channels."""

from __future__ import annotations

import pytest

from approvals.cards import APPROVE_ACTION
from graph.surface import RunState
from tests.fakes.payloads_ai import app_home_opened, home_click
from tests.scenarios.harness import APPROVER, CHANNEL, OUTSIDER, REQUESTER, RUN_ID, harness, \
    settings_for

pytestmark = pytest.mark.docker


def texts(view: dict) -> str:
    found = []
    for block in view["blocks"]:
        found.append((block.get("text") or {}).get("text", ""))
        found += [e.get("text", "") for e in block.get("elements", []) if e.get("type") == "mrkdwn"]
        found += [f.get("text", "") for f in block.get("fields", [])]
    return "\n".join(found)


def approve_value(view: dict) -> str:
    return next(e["value"] for b in view["blocks"] for e in b.get("elements", [])
                if e.get("action_id") == APPROVE_ACTION)


async def opened(h, user: str, published: int = 1):
    await h.post(app_home_opened(user=user))
    home = await h.slack.wait_for(lambda: (v := h.slack.home(user)) and
                                  len(v.history) + 1 >= published and v)
    return home


async def test_home_shows_approvals_with_buttons_active_and_recent_runs(
        slack_emulator, redis_server, sandbox_image, tmp_path, redis_db):
    redis_db.set("k", "v")
    settings = settings_for(slack_emulator, redis_server.url, tmp_path / "data")
    async with harness(settings, slack_emulator) as h:
        h.slack.add_channel(CHANNEL, "ops", members=[REQUESTER, APPROVER])
        await h.command("redis info section=server")
        done = await h.report(await h.run_thread(0))
        await h.command("redis flushdb")
        card = await h.card(await h.run_thread(1))
        done_id = RUN_ID.search(done.text).group(1)
        store = h.bot.runtime.run_store  # the run is recorded as waiting once its card is out
        await h.slack.wait_for(lambda: store.in_states(RunState.WAITING))

        mine = (await opened(h, REQUESTER)).view
        shown = texts(mine)
        assert "Nothing is waiting for your approval." in shown, "tier 4: not theirs to decide"
        active = shown.split("Your active runs")[1].split("Recent runs")[0]
        assert "waiting" in active and "redis flushdb" in active and done_id not in active
        assert done_id in shown.split("Recent runs in your channels")[1]

        theirs = (await opened(h, APPROVER)).view
        assert "Delete every key in the Redis database" in texts(theirs)
        assert approve_value(theirs) == h.button_value(card), "the card's own buttons"
        assert "You have no active runs." in texts(theirs)
        assert redis_db.dbsize() == 1

        forged = home_click(user=OUTSIDER, view=h.slack.home(APPROVER).to_api(),
                            action_id=APPROVE_ACTION, value=approve_value(theirs))
        await h.post(forged)
        await h.slack.wait_for(lambda: h.slack.home(OUTSIDER))  # refreshed after the click
        assert redis_db.dbsize() == 1, "an outsider's click from a Home view decides nothing"

        await h.post(home_click(user=APPROVER, view=h.slack.home(APPROVER).to_api(),
                                action_id=APPROVE_ACTION, value=approve_value(theirs)))
        report = await h.report(await h.run_thread(1))
        assert "done" in report.text and redis_db.dbsize() == 0
        decided = h.card_state(card)
        assert "Approve" not in str([b for b in decided.blocks if b["type"] == "actions"])
        after = await h.slack.wait_for(lambda: (v := h.slack.home(APPROVER)) and v.history and v)
        assert "Nothing is waiting for your approval." in texts(after.view)
