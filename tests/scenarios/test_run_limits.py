"""Issue 9 item 12: the policy's run rate limit over real HTTP, in both storage modes — a
person over it gets the sentence (ephemeral, only to them), an auditor finds the refusal, and
no run starts."""

import pytest

from graph.surface import RunState
from tests.scenarios.harness import POLICY, REQUESTER, harness, settings_for

pytestmark = [pytest.mark.docker,
              pytest.mark.parametrize("storage", ["sqlite", "postgres"], indirect=True)]
LIMITED = POLICY + "limits:\n  runs_per_user: 1/1h\n"


async def test_a_person_over_the_run_limit_is_told_and_no_run_starts(
        slack_emulator, redis_server, sandbox_image, tmp_path, storage):
    settings = settings_for(slack_emulator, redis_server.url, tmp_path / "d", LIMITED, **storage)
    async with harness(settings, slack_emulator) as h:
        await h.command("redis del keys=a")  # tier 3: it waits on its card, no container needed
        await h.card(await h.run_thread())
        await h.command("redis info")
        said = await h.ephemeral(REQUESTER, "Nothing was started")
        assert said == ("<@UREQ1> has started 1 run in the last 1h; the policy allows 1 per 1h "
                        "per person. Nothing was started; try again later.")
        (refused,) = await h.bot.runtime.audit.rows(("run.refused",))
        assert (refused["actor"], refused["data"]["text"]) == (REQUESTER, "redis info")
        runs = await h.bot.runtime.run_store.in_states(*RunState)
        assert [run.task.text for run, _ in runs] == ["redis del keys=a"]
        assert len([m for m in h.top_level() if "opsbot" in m.text]) == 1
