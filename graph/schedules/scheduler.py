"""Firing schedules: once per tick, however many opsbot processes run, and once after downtime.

:meth:`Scheduler.tick` looks at every schedule: the latest fire time at or before now is
*due* if it is later than the tick the schedule's row says was fired last. A due tick is
submitted as a run (lane ``scheduled``) through the run manager, exactly like a slash command,
with the delivery key ``schedule:<name>:<tick>``: the key, the run row and its start job commit
together, so of two processes that see the same tick only one starts a run. Only the latest due
tick fires, so a schedule that missed ten ticks while opsbot was down runs once when it is back.
A schedule seen for the first time fires from its next tick on (no run for a tick that passed
before it existed).

Who calls ``tick``: in scale-out mode a procrastinate periodic task (``PgQueue.periodic``:
one job per tick across every worker, stale jobs skipped), every second when a schedule has a
seconds field and every minute otherwise; in embedded mode :meth:`run` sleeps until the next
fire time. Either way the delivery key is what makes a tick fire once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import structlog

from graph.records import Records
from graph.runs import Refused, RunManager
from graph.schedules.spec import Schedule
from graph.surface import RunRef
from graph.task import Fired, Source, Task

log = structlog.get_logger("opsbot.schedules")
Prepare = Callable[[Task], Awaitable[Task]]  # fills in the requester's groups, the team ...
Clock = Callable[[], datetime]


class Scheduler:
    def __init__(self, schedules: Sequence[Schedule], runs: RunManager, records: Records,
                 clock: Clock = lambda: datetime.now(UTC)):
        self.schedules = tuple(schedules)
        self.runs = runs
        self.records = records
        self.clock = clock
        self.prepare: Prepare | None = None  # set once the front-end can describe requesters

    @property
    def every_s(self) -> int:
        """How often a tick must look: every second if a schedule has a seconds field."""
        return 1 if any(s.seconds for s in self.schedules) else 60

    async def tick(self) -> list[RunRef]:
        """Fire every due schedule; the runs this call started. Until ``prepare`` is set,
        schedules are only noted (a new one's first tick), nothing fires: the next tick
        fires what is due."""
        now, started = self.clock(), []
        for schedule in self.schedules:
            run = await self._due(schedule, now)
            if run is not None:
                started.append(run)
        return started

    async def _due(self, schedule: Schedule, now: datetime) -> RunRef | None:
        due = schedule.previous(now)
        row = await self.records.schedules.get(schedule.name)
        if row is None or row.tick is None:  # first sight: from the next tick on
            await self.records.schedules.fired(schedule.name, due, None)
            return None
        if due <= row.tick or self.prepare is None:
            return None
        try:
            return await self.fire(schedule, due)
        except Exception:  # noqa: BLE001 - one schedule's failure must not stop the others
            log.exception("schedule failed to fire", schedule=schedule.name)
            return None

    async def fire(self, schedule: Schedule, tick: datetime) -> RunRef | None:
        """Start ``schedule``'s run for ``tick``, unless another process already did."""
        assert self.prepare is not None
        task = await self.prepare(task_for(schedule, tick))
        run = await self.runs.submit(task, f"schedule:{schedule.name}:{tick.isoformat()}")
        started = run if isinstance(run, RunRef) else None
        await self.records.schedules.fired(schedule.name, tick,
                                           started.run_id if started else None)
        if isinstance(run, Refused):
            await self.records.schedules.reported(schedule.name, "refused", "refused",
                                                  run.sentence, True)
        log.info("schedule fired", schedule=schedule.name, tick=tick.isoformat(),
                 run_id=started.run_id if started else None)
        return started

    async def run(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Embedded mode: tick at each fire time (at least every minute), forever."""
        while True:
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - the next tick tries again
                log.exception("schedules tick failed")
            await sleep(self._pause())

    def _pause(self) -> float:
        if self.prepare is None:
            return 0.5  # starting up: what is due fires as soon as requesters can be described
        now = self.clock()
        upcoming = [s.next(now) for s in self.schedules]
        wait = min((t - now).total_seconds() for t in upcoming) if upcoming else 60.0
        return min(max(wait, 0.05), 60.0)


def task_for(schedule: Schedule, tick: datetime, team: str = "") -> Task:
    return Task(source=Source.SCHEDULE, team=team, channel=schedule.channel,
                user=schedule.identity, text=schedule.text,
                schedule=Fired(name=schedule.name, tick=tick, post=schedule.post))
