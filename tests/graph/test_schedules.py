"""Schedules: the file (line-precise errors), fire times in a time zone, firing once per tick
(two schedulers on one database stand for two processes), once after downtime, and the
``post`` rules — in both storage modes, with a recording surface instead of Slack."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from graph.queue import LocalQueue
from graph.runs import RunManager
from graph.schedules import ScheduledSurface, ScheduleError, Scheduler, parse_schedules
from graph.schedules.surface import digest
from graph.surface import CallReport, Checklist, Report, RunRef, RunState
from graph.task import Post
from tools import TOOLSETS
from tools.catalog import Catalog
from tools.redis import RedisConfig

GOOD = """\
schedules:
  - name: cache-memory
    cron: "*/15 * * * *"
    timezone: Europe/Paris
    channel: C0OPS
    command: redis info section=memory
    identity: U0REQ
    post: on_change
  - name: why-slow
    cron: "0 9 * * 1-5"
    channel: C0OPS
    question: is the cache slower than yesterday?
    identity: U0REQ
"""
T0 = datetime(2026, 7, 1, 12, 0, 0, tzinfo=UTC)


def catalog() -> Catalog:
    return Catalog(TOOLSETS, {"redis": RedisConfig(url="redis://127.0.0.1:6379/0")})


def schedule_file(cron: str = "* * * * *", post: str = "always", name: str = "check") -> str:
    return (f"schedules:\n  - name: {name}\n    cron: \"{cron}\"\n    channel: C0OPS\n"
            f"    command: redis get k\n    identity: U0REQ\n    post: {post}\n")


def test_a_good_file_reads():
    memory, question = parse_schedules(GOOD, catalog=catalog())
    assert memory.post is Post.ON_CHANGE and memory.text == "redis info section=memory"
    assert question.question and question.post is Post.ALWAYS and question.timezone == "UTC"


@pytest.mark.parametrize("body, expected", [
    ("schedules:\n  - name: a\n    cron: \"61 * * * *\"\n    channel: C0OPS\n"
     "    command: redis info\n    identity: U0REQ\n",
     "s.yml:3: schedules[0].cron: `61 * * * *` is not a cron expression"),
    ("schedules:\n  - name: a\n    cron: \"* * * * *\"\n    channel: C0OPS\n"
     "    command: redis info\n    identity: U0REQ\n    timezone: Mars/Olympus\n",
     "s.yml:7: schedules[0].timezone: `Mars/Olympus` is not a time zone"),
    ("schedules:\n  - name: a\n    cron: \"* * * * *\"\n    channel: C0OPS\n"
     "    comand: redis info\n    identity: U0REQ\n",
     "s.yml:5: schedules[0].comand: unknown key `comand` (did you mean `command`?)"),
    ("schedules:\n  - name: a\n    cron: \"* * * * *\"\n    channel: C0OPS\n"
     "    command: redis info\n    question: why?\n    identity: U0REQ\n",
     "s.yml:2: schedules[0]: give exactly one of `command`"),
    ("schedules:\n  - name: a\n    cron: \"* * * * *\"\n    channel: C0OPS\n"
     "    command: redis info\n    identity: bob\n",
     "s.yml:6: schedules[0].identity: `bob` is not a Slack user id"),
    ("schedules:\n  - name: a\n    cron: \"* * * * *\"\n    channel: C0OPS\n"
     "    command: redis infoo\n    identity: U0REQ\n",
     "s.yml:5: schedules[0].command: `redis` has no action `infoo`. Did you mean `info`?"),
    ("schedules:\n  - name: a\n    cron: \"* * * * *\"\n    channel: C0OPS\n"
     "    command: redis del key=x\n    identity: U0REQ\n",
     "s.yml:5: schedules[0].command: Bad parameters for `redis del`: keys: Field required"),
    ("schedules:\n  - name: a\n    cron: \"* * * * *\"\n    channel: C0OPS\n"
     "    command: redis info\n    identity: U0REQ\n    post: sometimes\n",
     "s.yml:7: schedules[0].post: Input should be 'always', 'on_change' or 'on_failure'"),
    (schedule_file() + schedule_file().removeprefix("schedules:\n"),
     "s.yml:8: schedules[1].name: duplicate schedule name (first on line 2)"),
    ("schedules:\n  - name: a\n    cron: [\n", "s.yml:4: not valid YAML"),
    ("- just a list\n", "s.yml:1: the schedules file must be a mapping"),
])
def test_every_problem_names_its_line(body, expected):
    with pytest.raises(ScheduleError) as raised:
        parse_schedules(body, "s.yml", catalog())
    assert expected in str(raised.value)


def test_fire_times_follow_the_time_zone_across_daylight_saving():
    (paris,) = parse_schedules(schedule_file("0 9 * * *").replace(
        "    post:", "    timezone: Europe/Paris\n    post:"))
    winter, summer = datetime(2026, 3, 28, 12, tzinfo=UTC), datetime(2026, 3, 30, 12, tzinfo=UTC)
    assert paris.previous(winter) == datetime(2026, 3, 28, 8, tzinfo=UTC)  # 09:00 CET
    assert paris.previous(summer) == datetime(2026, 3, 30, 7, tzinfo=UTC)  # 09:00 CEST
    assert paris.next(winter) == datetime(2026, 3, 29, 7, tzinfo=UTC)


def test_a_tick_at_its_exact_second_is_due_then():
    (every_5s,) = parse_schedules(schedule_file("* * * * * */5"))
    assert every_5s.seconds and every_5s.previous(T0) == T0
    assert every_5s.previous(T0 + timedelta(seconds=4.9)) == T0


# firing --------------------------------------------------------------------------------


class Recorder:
    """A surface that remembers what would have been shown in Slack."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.reports: list[Report] = []
        self.said: list[str] = []
        self.refusals: list[str] = []

    async def open_run(self, run: RunRef, checklist: Checklist) -> RunRef:
        self.opened.append(run.run_id)
        ts = f"{len(self.opened)}.000"
        return run.model_copy(update={"thread_ts": run.thread_ts or ts, "status_ts": ts})

    async def progress(self, run: RunRef, checklist: Checklist, final: bool = False) -> None:
        pass

    async def ask_approval(self, run: RunRef, request: Any) -> str | None:
        return "card"

    async def update_approval(self, run: RunRef, request: Any) -> None:
        pass

    async def report(self, run: RunRef, report: Report) -> None:
        assert run.thread_ts and not run.thread_ts.startswith("quiet-")
        self.reports.append(report)

    async def say(self, run: RunRef, text: str) -> None:
        self.said.append(text)

    async def refused(self, task: Any, text: str) -> None:
        self.refusals.append(text)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def identity(task):
    return task


def scheduler(records, body: str, clock: Clock) -> Scheduler:
    runs = RunManager(records, LocalQueue(), ScheduledSurface(Recorder(), records))
    fired = Scheduler(parse_schedules(body), runs, records, clock)
    fired.prepare = identity
    return fired


async def started(records) -> list[RunRef]:
    return [run for run, _ in await records.runs.in_states(RunState.QUEUED)]


async def test_a_new_schedule_fires_from_its_next_tick_once_per_tick(records):
    clock = Clock(T0 + timedelta(seconds=30))
    ticker = scheduler(records, schedule_file("* * * * *"), clock)
    assert await ticker.tick() == []  # 12:00 passed before the schedule was first seen
    clock.now = T0 + timedelta(minutes=1, seconds=2)
    (run,) = await ticker.tick()
    assert await ticker.tick() == []
    assert run.task.schedule.tick == T0 + timedelta(minutes=1)
    assert run.task.source.value == "schedule" and run.task.user == "U0REQ"
    row = await records.schedules.get("check")
    assert row.tick == T0 + timedelta(minutes=1) and row.run_id == run.run_id


async def test_after_downtime_a_missed_tick_runs_once_not_n_times(records):
    clock = Clock(T0)
    ticker = scheduler(records, schedule_file("* * * * *"), clock)
    await ticker.tick()
    clock.now = T0 + timedelta(minutes=10, seconds=5)  # ten ticks missed
    (run,) = await ticker.tick()
    assert run.task.schedule.tick == T0 + timedelta(minutes=10)
    assert await ticker.tick() == [] and len(await started(records)) == 1


async def test_two_processes_on_one_tick_start_one_run(records):
    """Two schedulers over one database, as two opsbot processes are; the delivery key
    ``schedule:<name>:<tick>`` is what lets only one of them start the tick's run."""
    clock = Clock(T0)
    first, second = (scheduler(records, schedule_file("* * * * *"), clock) for _ in range(2))
    await first.tick()
    clock.now = T0 + timedelta(minutes=1)
    tick = first.schedules[0].previous(clock.now)
    both = await asyncio.gather(first.fire(first.schedules[0], tick),
                                second.fire(second.schedules[0], tick))
    assert len([r for r in both if r is not None]) == 1
    assert len(await started(records)) == 1


async def test_nothing_fires_before_the_requester_can_be_described(records):
    clock = Clock(T0)
    ticker = scheduler(records, schedule_file("* * * * *"), clock)
    ticker.prepare = None
    assert await ticker.tick() == [] and (await records.schedules.get("check")).tick == T0
    clock.now = T0 + timedelta(minutes=3)  # a tick missed while starting up ...
    assert await ticker.tick() == [] and ticker._pause() == 0.5
    ticker.prepare = identity
    (run,) = await ticker.tick()  # ... fires once the requester can be described
    assert run.task.schedule.tick == T0 + timedelta(minutes=3)


# posting -------------------------------------------------------------------------------


def report_of(run: RunRef, output: str, status: str = "ok") -> Report:
    call = CallReport(summary="get k", invocation="redis get key=k", status=status, output=output)
    return Report(run_id=run.run_id, state=RunState.DONE, headline="", calls=[call])


async def scheduled_run(records, post: str) -> tuple[ScheduledSurface, Recorder, Scheduler]:
    recorder = Recorder()
    clock = Clock(T0)
    ticker = scheduler(records, schedule_file("* * * * *", post), clock)
    ticker.runs.surface = ticker.runs.desk.surface = surface = ScheduledSurface(recorder, records)
    await ticker.tick()
    return surface, recorder, ticker


async def run_once(records, ticker: Scheduler, surface: ScheduledSurface, output: str,
                   status: str = "ok") -> RunRef:
    ticker.clock.now += timedelta(minutes=1)  # type: ignore[attr-defined]
    (run,) = await ticker.tick()
    opened = await surface.open_run(run, Checklist(run_id=run.run_id))
    await records.runs.update(run.run_id, run=opened)
    await surface.report(opened, report_of(opened, output, status))
    return opened


async def test_on_change_posts_only_when_the_result_changed(records):
    surface, recorder, ticker = await scheduled_run(records, "on_change")
    for output in ["1", "1", "2", "2", "1"]:
        quiet = await run_once(records, ticker, surface, output)
        assert quiet.thread_ts == f"quiet-{quiet.run_id}"
    assert [r.calls[0].output for r in recorder.reports] == ["1", "2", "1"]
    row = await records.schedules.get("check")
    assert row.result == digest(recorder.reports[-1]) and row.summary == "done: 1"
    assert row.posted is True


async def test_on_failure_posts_failures_and_denials_only(records):
    surface, recorder, ticker = await scheduled_run(records, "on_failure")
    await run_once(records, ticker, surface, "fine")
    await run_once(records, ticker, surface, "denied by policy", status="denied")
    await run_once(records, ticker, surface, "fine")
    assert [r.calls[0].status for r in recorder.reports] == ["denied"]
    assert (await records.schedules.get("check")).posted is False


async def test_always_posts_every_result_in_its_own_thread(records):
    surface, recorder, ticker = await scheduled_run(records, "always")
    first = await run_once(records, ticker, surface, "1")
    await run_once(records, ticker, surface, "1")
    assert len(recorder.reports) == 2 and not first.thread_ts.startswith("quiet-")


async def test_a_quiet_run_that_needs_an_approval_shows_itself(records):
    surface, recorder, ticker = await scheduled_run(records, "on_change")
    ticker.clock.now += timedelta(minutes=1)  # type: ignore[attr-defined]
    (run,) = await ticker.tick()
    quiet = await surface.open_run(run, Checklist(run_id=run.run_id))
    await records.runs.update(run.run_id, run=quiet)
    assert recorder.opened == []
    assert await surface.ask_approval(quiet, object()) == "card"
    assert recorder.opened == [run.run_id]
    row = await records.runs.row(run.run_id)
    assert row.run.status_ts == "1.000" and row.run.thread_id == quiet.thread_id
