"""The policy's limits where runs are submitted (``RunManager.submit`` + ``graph/quota.py``), in
both storage modes: a refusal is a sentence to the requester and a ``run.refused`` row, and
nothing is recorded or queued for it. Submissions take turns (two transactions at a time), and
telling a refused requester comes after the turn."""

import asyncio
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from graph.policy import parse_policy
from graph.queue import LocalQueue
from graph.quota import Quota, asks_llm
from graph.runs import HANDOFF_LANES, Refused, RunManager
from graph.surface import RunRef
from graph.task import Alert, Source, Task
from tools import TOOLSETS
from tools.catalog import Catalog
from tools.redis import RedisConfig

CATALOG = Catalog(TOOLSETS, {"redis": RedisConfig(url="redis://10.0.0.5:6379/0")})


class Told:
    """A surface that only records what requesters were told about refused runs."""

    def __init__(self) -> None:
        self.refusals: list[tuple[str, str]] = []

    async def refused(self, task: Task, text: str) -> None:
        self.refusals.append((task.user, text))


def manager(records, limits: str, told: Told | None = None
            ) -> tuple[RunManager, LocalQueue, Told]:
    queue, told = LocalQueue(), told or Told()
    runs = RunManager(records, queue, told)  # type: ignore[arg-type]
    policy = parse_policy(f"version: 1\nlimits:\n{limits}")
    runs.quota = Quota(policy.limits, "gpt-4o-mini", lambda task: asks_llm(task, CATALOG))
    return runs, queue, told


def task(user: str = "U1", channel: str = "C1", text: str = "redis info", **more) -> Task:
    return Task(source=Source.SLASH, team="T1", channel=channel, channel_name="ops", user=user,
                text=text, **more)


async def refusals(records) -> list[dict]:
    return await records.audit.rows(("run.refused",))


async def test_a_person_over_their_rate_is_told_and_nothing_is_queued(records):
    runs, queue, told = manager(records, "  runs_per_user: 2/1h\n")
    assert [isinstance(await runs.submit(task()), RunRef) for _ in range(2)] == [True, True]
    refused = await runs.submit(task(text="redis slowlog"), delivery="slack:Ev1")
    sentence = ("<@U1> has started 2 runs in the last 1h; the policy allows 2 per 1h per person. "
                "Nothing was started; try again later.")
    assert refused == Refused(sentence) and told.refusals == [("U1", sentence)]
    assert queue._queue.qsize() == 2
    assert await records.runs.count_started(datetime(2000, 1, 1, tzinfo=UTC)) == 2
    (row,) = await refusals(records)
    assert (row["run_id"], row["actor"]) == (None, "U1")
    assert row["data"] == {"reason": sentence, "source": "slash", "channel": "C1",
                           "text": "redis slowlog", "alert": None}
    assert await runs.submit(task(text="redis slowlog"), delivery="slack:Ev1") is None  # retry
    assert len(told.refusals) == 1 and len(await refusals(records)) == 1
    assert isinstance(await runs.submit(task(user="U2")), RunRef)  # someone else may


async def test_a_channel_over_its_rate_refuses_everyone_in_it_until_the_window_passes(records):
    runs, _, told = manager(records, "  runs_per_channel: 2/10m\n")
    for user in ("U1", "U2"):
        await runs.submit(task(user=user))
    assert isinstance(await runs.submit(task(user="U3"), tell=False), Refused)
    assert told.refusals == []  # the caller answers (MCP): the surface says nothing
    assert isinstance(await runs.submit(task(user="U3", channel="C2")), RunRef)
    runs.clock = lambda: datetime.now(UTC) + timedelta(minutes=11)
    assert isinstance(await runs.submit(task(user="U3")), RunRef)


async def test_an_alert_is_always_investigated(records):
    runs, _, _ = manager(records, "  runs_per_user: 1/1h\n  runs_per_channel: 1/1h\n")
    await runs.submit(task())
    alert = Alert(id="P1", title="redis down")
    assert isinstance(await runs.submit(task(text="", alert=alert, user="UPAGERDUTY")
                                        .model_copy(update={"source": Source.ALERT})), RunRef)
    assert isinstance(await runs.submit(task(user="U2")), Refused)  # it counted for the channel


async def test_the_daily_llm_budget_refuses_only_runs_that_would_ask_the_llm(records):
    runs, _, told = manager(records, "  llm_per_channel_per_day: {tokens: 1000}\n")
    spender = await runs.submit(task(text="why is redis slow?"))
    await records.audit.record("llm.call", spender.run_id, input_tokens=900, output_tokens=100,
                               total_tokens=1000)
    assert isinstance(await runs.submit(task(text="and now?")), Refused)
    assert "#ops has used its LLM budget for today (1,000 tokens" in told.refusals[0][1]
    assert isinstance(await runs.submit(task(text="redis info")), RunRef)  # typed: no LLM
    assert isinstance(await runs.submit(task(text="why?", channel="C2")), RunRef)
    runs.clock = lambda: datetime.now(UTC) + timedelta(days=1)  # a new day, a new budget
    assert isinstance(await runs.submit(task(text="and now?")), RunRef)


async def test_a_burst_from_one_person_passes_the_count_only_as_often_as_allowed(records):
    """Counted and recorded in one transaction, locked per requester (PostgreSQL: without the
    lock, concurrent submits all count the same runs and all pass)."""
    runs, _, told = manager(records, "  runs_per_user: 3/1h\n")
    outcomes = await asyncio.gather(*(runs.submit(task()) for _ in range(12)))
    assert sum(isinstance(o, RunRef) for o in outcomes) == 3
    assert len(told.refusals) == 9 and len(await refusals(records)) == 9


@pytest.mark.parametrize("text, asks", [
    ("why is redis slow?", True), ("redis info", False), ("rdis info", False), ("help", False),
    ("", False)])
def test_which_tasks_would_ask_the_llm(text, asks):
    assert asks_llm(task(text=text), CATALOG) is asks
    assert asks_llm(task(text="", alert=Alert(id="P1", title="down")), CATALOG)
    assert not asks_llm(task(text="", call={"toolset": "redis", "action": "info", "params": {}}),
                        CATALOG)


def count_transactions(records) -> dict[str, int]:
    """How many of ``records``' transactions are open, now and at most."""
    seen = {"open": 0, "most": 0}
    opened = records.transaction

    @asynccontextmanager
    async def transaction():
        async with opened() as tx:
            seen["open"] += 1
            seen["most"] = max(seen["most"], seen["open"])
            try:
                yield tx
            finally:
                seen["open"] -= 1

    records.transaction = transaction
    return seen


async def test_submissions_take_turns_two_transactions_at_a_time(pg_records):
    """A burst of runs handed off at once (PostgreSQL, where transactions do run side by
    side): two are recorded and queued at a time, every one of them is."""
    runs, queue, _ = manager(pg_records, "  runs_per_user: 100/1h\n")
    seen = count_transactions(pg_records)
    submitted = await asyncio.gather(*(runs.submit(task(user=f"U{i}")) for i in range(8)))
    assert all(isinstance(run, RunRef) for run in submitted) and queue._queue.qsize() == 8
    assert seen["most"] == HANDOFF_LANES == 2


class Stuck(Told):
    """Refusals that hang in Slack (a 429 with a long Retry-After) until released."""

    def __init__(self) -> None:
        super().__init__()
        self.both = asyncio.Event()  # two requesters are being told
        self.release = asyncio.Event()

    async def refused(self, task: Task, text: str) -> None:
        await super().refused(task, text)
        if len(self.refusals) == 2:
            self.both.set()
        await self.release.wait()


async def test_a_refusal_stuck_in_slack_does_not_hold_up_the_next_run(pg_records):
    """Telling a refused requester comes after the submission's turn: two refusals stuck in
    Slack's rate limits do not keep the next run from being recorded and queued."""
    stuck = Stuck()
    runs, _, _ = manager(pg_records, "  runs_per_user: 1/1h\n", stuck)
    assert isinstance(await runs.submit(task()), RunRef)
    refused = [asyncio.create_task(runs.submit(task(text=f"redis info {i}"))) for i in range(2)]
    await asyncio.wait_for(stuck.both.wait(), 10)
    assert isinstance(await asyncio.wait_for(runs.submit(task(user="U2")), 10), RunRef)
    stuck.release.set()
    assert [type(await r) for r in refused] == [Refused, Refused]
