"""The run manager: what ingress does with runs — start them, cancel them, annotate them.

Every hand-off is one transaction: ``submit`` writes the dedupe key, the run row, the ``task``
audit row and the start job together — or, when the policy's limits refuse the run
(:mod:`graph.quota`), the dedupe key and a ``run.refused`` row, and the requester is told why;
``cancel`` decides against the approvals of the run,
locked, so that exactly one of two things happens when a cancel races the approval click:

* "cancelled, nothing ran": pending approvals are closed (their resume jobs end the run
  without executing anything), or a running drive is stopped;
* "cancel refused: already approved and running": an approved action has not finished.

Submissions take turns, :data:`HANDOFF_LANES` transactions at a time: each is a few round
trips whose every step is a callback on the event loop that also acks Slack's requests, so a
burst of them in flight at once queued the next requests' acks behind all their steps; waiting
in line costs a hand-off a few milliseconds, not the ack. Telling a refused requester (a Slack
call) happens after the turn.

Jobs are run by a :class:`graph.driver.Driver`, in this process (embedded, ``opsbot serve``)
or in any ``opsbot worker`` (scale-out).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from approvals.models import ApprovalRequest, ApprovalStatus
from graph import metrics, tracing
from graph.desk import ApprovalDesk
from graph.driver import Checklists
from graph.queue import JobQueue, lane_for, remember_job, start_job
from graph.quota import Quota
from graph.records import Records, Tx
from graph.records.base import RunRow
from graph.surface import Report, RunRef, RunState, StepState, Surface
from graph.task import Task, new_run_id

log = structlog.get_logger("opsbot.runs")
HANDOFF_LANES = 2  # submissions recorded and queued at once (the rest wait their turn)
NOT_FOUND = "There is no run `{run_id}`."
ENDED = "Run `{run_id}` already ended ({state})."
NOT_ALLOWED = "Only the requester or one of the run's approvers can cancel it."
CANCELLED = "Run `{run_id}` cancelled: nothing it was waiting to do will run."
CANCEL_REFUSED = ("Cancel refused: {summary} was already approved and is running in run "
                  "`{run_id}`; it can't be stopped safely halfway.")


@dataclass(frozen=True)
class Refused:
    """A run the policy's limits did not let start: the sentence its requester was told."""

    sentence: str


@dataclass(frozen=True)
class Stop:
    """What a cancel (or a system stop) decided, inside its transaction."""

    message: str
    stopped: bool = False
    closed: tuple[ApprovalRequest, ...] = ()
    row: RunRow | None = None


class RunManager:
    def __init__(self, records: Records, queue: JobQueue, surface: Surface,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.records = records
        self.queue = queue
        self.surface = surface
        self.desk = ApprovalDesk(records, queue, surface, clock)
        self.checklists = Checklists(records)
        self.quota = Quota()  # the policy's run limits, set once the policy is loaded
        self._turns = asyncio.Semaphore(HANDOFF_LANES)

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.desk.clock

    @clock.setter
    def clock(self, clock: Callable[[], datetime]) -> None:
        self.desk.clock = clock

    @property
    def audit(self):
        return self.records.audit

    # starting ----------------------------------------------------------------------------

    async def submit(self, task: Task, delivery: str | None = None, *,
                     tell: bool = True) -> RunRef | Refused | None:
        """Record and queue a run; None when ``delivery`` was already seen (a redelivery);
        :class:`Refused` when the policy's limits say no — the requester is told through the
        surface unless ``tell`` is False (a caller that answers them itself, e.g. MCP).

        The run's trace is the current one (the request's): ``run.trace`` carries it on."""
        run_id = new_run_id()
        with tracing.tracer.start_as_current_span("run.submit", attributes={
                "opsbot.run_id": run_id, "opsbot.source": task.source.value,
                "opsbot.lane": lane_for(task).value}):
            run = RunRef(run_id=run_id, task=task, thread_ts=task.thread_ts,
                         trace=tracing.traceparent())
            return await self._submit(run, delivery, tell)

    async def _submit(self, run: RunRef, delivery: str | None, tell: bool
                      ) -> RunRef | Refused | None:
        task = run.task
        async with self._turns, self.records.transaction() as tx:
            if delivery is not None and not await tx.dedupe.first_time(delivery):
                return None
            refusal = await self.quota.refusal(tx, task, self.clock())
            if refusal:
                await tx.audit.record("run.refused", None, task.user, reason=refusal,
                                      **_described(task))
            else:
                await self._record(tx, run)
        if refusal:
            log.info("run refused", user=task.user, channel=task.channel)
            if tell:
                await self.surface.refused(task, refusal)
            return Refused(refusal)
        metrics.run_started(task, lane_for(task).value)
        return run

    async def _record(self, tx: Tx, run: RunRef) -> None:
        await tx.runs.add(run)
        await tx.audit.record("task", run.run_id, run.task.user, **_described(run.task))
        await self.queue.defer(tx, start_job(run))

    # stopping ----------------------------------------------------------------------------

    async def cancel(self, run_id: str, user: str, groups: frozenset[str]) -> str:
        """A person's cancel; returns the sentence for them."""
        stop = await self._stop(run_id, f"cancelled by <@{user}>", user, groups)
        return stop.message

    async def end(self, run_id: str, reason: str) -> bool:
        """End a run for a system reason (e.g. its incident resolved). True if it was stopped."""
        return (await self._stop(run_id, reason, None, frozenset())).stopped

    async def _stop(self, run_id: str, reason: str, user: str | None,
                    groups: frozenset[str]) -> Stop:
        async with self.records.transaction() as tx:
            stop = await self._decide_stop(tx, run_id, reason, user, groups)
        if stop.stopped and stop.row is not None:
            await self._after_stop(stop, reason)
        return stop

    async def _decide_stop(self, tx: Tx, run_id: str, reason: str, user: str | None,
                           groups: frozenset[str]) -> Stop:
        row = await tx.runs.row(run_id, lock=True)
        if row is None:
            return Stop(NOT_FOUND.format(run_id=run_id))
        if row.state.final:
            return Stop(ENDED.format(run_id=run_id, state=row.state.value))
        approvals = await tx.approvals.for_run(run_id, lock=True)
        pending = [a for a in approvals if not a.status.final]
        if user is not None and user != row.run.task.user and not any(
                a.rule.includes(user, groups) for a in pending):
            await tx.audit.record("cancel.refused", run_id, user, reason=NOT_ALLOWED)
            return Stop(NOT_ALLOWED)
        running = await self._approved_unfinished(tx, run_id, approvals)
        if running is not None:
            message = CANCEL_REFUSED.format(summary=running.summary, run_id=run_id)
            await tx.audit.record("cancel.refused", run_id, user, reason=message,
                                  approval=running.id)
            return Stop(message)
        await tx.audit.record("run.cancel" if user else "run.stop", run_id, user, reason=reason)
        await tx.runs.update(run_id, stop_reason=reason)
        closed = await self.desk.close_in(tx, row.run, pending, ApprovalStatus.CANCELLED)
        if row.state is RunState.QUEUED:
            await tx.runs.set_state(run_id, RunState.CANCELLED)
        return Stop(CANCELLED.format(run_id=run_id), True, tuple(closed), row)

    @staticmethod
    async def _approved_unfinished(tx: Tx, run_id: str,
                                   approvals: list[ApprovalRequest]) -> ApprovalRequest | None:
        approved = [a for a in approvals if a.status is ApprovalStatus.APPROVED]
        if not approved:
            return None
        finished = await tx.executions.finished_calls(run_id)
        return next((a for a in approved if a.call_id not in finished), None)

    async def _after_stop(self, stop: Stop, reason: str) -> None:
        row = stop.row
        assert row is not None
        await self.desk.update_cards(row.run, list(stop.closed))
        if row.state is RunState.QUEUED:
            # its start job will find it ended; not aborted: a worker already opening it (inside
            # posting its status message) sees the stop when it records the message, and ends
            # the run there with its message saying so (killed, it would leave "running" behind)
            await self.surface.report(row.run, Report(run_id=row.run.run_id,
                                                      state=RunState.CANCELLED, headline=reason))
        elif row.state is RunState.RUNNING and not stop.closed:
            # a drive is under way: stop it. When approvals were closed, their resume job (deferred
            # with the cancel) ends the run; aborting here could kill that very job instead
            await self.queue.abort(row.run.run_id, row.run.thread_id)

    async def remember(self, run: RunRef) -> None:
        """Index an ended run again in the memory of past incidents (its incident resolved,
        say): a job, so whichever worker holds the memory does it."""
        async with self.records.transaction() as tx:
            await self.queue.defer(tx, remember_job(run))

    async def drain(self, timeout: float = 30) -> None:
        """Wait until every queued job has run (the console, tests, graceful shutdown)."""
        await self.queue.drain(timeout)

    # observing ---------------------------------------------------------------------------

    async def annotate(self, run_id: str, key: str, text: str, state: StepState) -> None:
        """Add or update a line on a run's status message (e.g. the incident's status)."""
        noted = await self.checklists.note(run_id, key, text, state)
        if noted is not None:
            row, checklist = noted
            await self.surface.progress(row.run, checklist, final=row.state.final)

    async def active(self, channel: str) -> list[tuple[RunRef, RunState, list[ApprovalRequest]]]:
        rows = await self.records.runs.in_states(RunState.QUEUED, RunState.RUNNING,
                                                 RunState.WAITING, channel=channel)
        return [(run, state, await self.desk.pending(run.run_id)) for run, state in rows]


def _described(task: Task) -> dict[str, Any]:
    """A task as its audit row tells it (``task`` or ``run.refused``)."""
    return {"source": task.source.value, "channel": task.channel, "text": task.text,
            "alert": task.alert.model_dump(exclude={"raw"}) if task.alert else None,
            **({"quote": task.quote.model_dump()} if task.quote else {})}
