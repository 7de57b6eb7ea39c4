"""The run manager: turns tasks into graph runs and clicks into resumes.

* ``submit`` persists the run (state ``queued``) and returns at once; a bounded pool of workers
  drives runs. A run is never lost: queued runs found at start-up are re-queued, runs that were
  executing when the process died are reported as interrupted in their thread.
* One LangGraph thread per Slack thread; every drive of a thread holds that thread's lock and
  re-checks pending interrupts under it, so two clicks can never resume the same run twice.
* Interrupts surface as approval requests (idempotent per interrupt id) and cards; a decisive
  vote resumes the run by interrupt id with the decision bound to the action hash.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import structlog
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from approvals.models import ApprovalRequest, ApprovalStatus
from approvals.store import ApprovalStore
from graph.audit import AuditLog
from graph.desk import ApprovalDesk
from graph.nodes import GraphState
from graph.store import RunStore
from graph.surface import Checklist, Report, RunRef, RunState, StepState, Surface
from graph.task import Task, new_run_id

log = structlog.get_logger("opsbot.runs")
Job = Callable[[], Awaitable[None]]
ENDED_KEPT = 256  # checklists of finished runs kept for late annotations (PagerDuty status)


class RunManager:
    def __init__(
        self,
        graph: CompiledStateGraph,
        runs: RunStore,
        approvals: ApprovalStore,
        audit: AuditLog,
        surface: Surface,
        workers: int = 4,
        recursion_limit: int = 60,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.graph = graph
        self.runs = runs
        self.audit = audit
        self.surface = surface
        self.recursion_limit = recursion_limit
        self.desk = ApprovalDesk(approvals, runs, audit, surface, clock, self._queue_resume)
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: Counter[str] = Counter()
        self._checklists: dict[str, Checklist] = {}
        self._ended: OrderedDict[str, Checklist] = OrderedDict()  # so late annotations keep steps
        self._active: dict[str, asyncio.Task[Any]] = {}
        self._stop_reasons: dict[str, str] = {}

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.desk.clock

    @clock.setter
    def clock(self, clock: Callable[[], datetime]) -> None:
        self.desk.clock = clock

    # lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(), name=f"run-worker-{i}")
                       for i in range(self._workers)]
        await self.recover()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def drain(self, timeout: float = 30) -> None:
        """Wait until every queued job has run (tests, graceful shutdown)."""
        await asyncio.wait_for(self._queue.join(), timeout)

    async def recover(self) -> None:
        """Re-queue runs that never started; report runs that died mid-flight.

        A run whose checkpoint shows it had already stopped at its approvals (the process died
        between posting a card and recording "waiting") is still waiting: its cards are
        re-posted where missing, and a click resumes it as usual.
        """
        for run, _ in self.runs.in_states(RunState.QUEUED):
            self._queue.put_nowait(lambda run=run: self._run(run))
        for run, _ in self.runs.in_states(RunState.RUNNING):
            config = self._config(run)
            if await self._stopped_at_approvals(config):
                _bind(run)
                await self._settle(run, config)
            else:
                await self._interrupted(run)

    async def _stopped_at_approvals(self, config: dict[str, Any]) -> bool:
        snapshot = await self.graph.aget_state(config)
        return bool(snapshot.interrupts) and all(
            t.interrupts or t.result is not None for t in snapshot.tasks)

    async def _worker(self) -> None:
        while True:
            job = await self._queue.get()
            structlog.contextvars.clear_contextvars()
            try:
                await job()
            except Exception:  # noqa: BLE001 - a broken run must not kill the worker
                log.exception("run job failed")
            finally:
                self._queue.task_done()

    # entry points ------------------------------------------------------------------------

    async def submit(self, task: Task) -> RunRef:
        run = RunRef(run_id=new_run_id(), task=task, thread_ts=task.thread_ts)
        self.runs.add(run)
        self.audit.record("task", run.run_id, task.user, source=task.source.value,
                          channel=task.channel, text=task.text,
                          alert=task.alert.model_dump(exclude={"raw"}) if task.alert else None)
        self._queue.put_nowait(lambda: self._run(run))
        return run

    async def cancel(self, run_id: str, user: str, groups: frozenset[str]) -> str:
        found = self.runs.get(run_id)
        if found is None:
            return f"There is no run `{run_id}`."
        run, state = found
        if state.final:
            return f"Run `{run_id}` already ended ({state.value})."
        if user != run.task.user and not self.desk.may_decide(run_id, user, groups):
            return "Only the requester or one of the run's approvers can cancel it."
        self.audit.record("run.cancel", run_id, user)
        await self._stop(run, f"cancelled by <@{user}>")
        return f"Run `{run_id}` cancelled."

    async def end(self, run_id: str, reason: str) -> bool:
        """End a run for a system reason (e.g. its incident resolved). True if it was live."""
        found = self.runs.get(run_id)
        if found is None or found[1].final:
            return False
        run, _ = found
        self.audit.record("run.stop", run_id, None, reason=reason)
        await self._stop(run, reason)
        return True

    async def _stop(self, run: RunRef, reason: str) -> None:
        """Cancel what is running, close pending approvals (their resumes end the run)."""
        active = self._active.get(run.run_id)
        if active is not None:
            self._stop_reasons[run.run_id] = reason
            active.cancel()
        closed = await self.desk.close_run(run.run_id, ApprovalStatus.CANCELLED)
        if active is None and not closed:
            await self._finish(run, Report(run_id=run.run_id, state=RunState.CANCELLED,
                                           headline=reason))

    async def annotate(self, run_id: str, key: str, text: str, state: StepState) -> None:
        """Add or update a line on a run's status message (e.g. the incident's status)."""
        found = self.runs.get(run_id)
        if found is None:
            return
        run, run_state = found
        checklist = self._checklist(run)
        checklist.state = run_state
        checklist.step(key, text, state)
        await self.surface.progress(run, checklist, final=run_state.final)

    def active(self, channel: str) -> list[tuple[RunRef, RunState, list[ApprovalRequest]]]:
        rows = self.runs.in_states(RunState.QUEUED, RunState.RUNNING, RunState.WAITING,
                                   channel=channel)
        return [(run, state, self.desk.pending(run.run_id)) for run, state in rows]

    # driving the graph --------------------------------------------------------------------

    async def _run(self, run: RunRef) -> None:
        _bind(run)
        checklist = self._checklist(run)
        checklist.state = RunState.RUNNING
        run = await self.surface.open_run(run, checklist)
        self.runs.save(run)
        busy = self._waiting_in_thread(run)
        if busy:
            await self._finish(run, Report(run_id=run.run_id, state=RunState.CANCELLED,
                                           headline=busy))
            return
        inputs: GraphState = {"run_id": run.run_id, "task": run.task.model_dump(mode="json")}
        await self._drive(run, inputs)

    async def _resume(self, run: RunRef, request: ApprovalRequest) -> None:
        decision = {"approval_id": request.id, "status": request.status.value,
                    "by": request.deciders, "reason": request.denial_reason,
                    "hash": request.action_hash}
        await self._drive(run, Command(resume={request.interrupt_id: decision}),
                          only_if_pending=request.interrupt_id)

    async def _drive(self, run: RunRef, inputs: Any, only_if_pending: str | None = None) -> None:
        config = self._config(run)
        _bind(run)
        async with self._thread_lock(run.thread_id):
            if only_if_pending is not None:
                snapshot = await self.graph.aget_state(config)
                if only_if_pending not in {i.id for i in snapshot.interrupts}:
                    return  # another click already resumed it
            self.runs.set_state(run.run_id, RunState.RUNNING)
            inner = asyncio.create_task(self._stream(run, inputs, config))
            self._active[run.run_id] = inner
            try:
                await inner
            except asyncio.CancelledError:
                if not inner.cancelled() or asyncio.current_task().cancelling():
                    raise  # opsbot is shutting down, not a user cancel
                reason = self._stop_reasons.pop(run.run_id, "cancelled while running")
                await self._finish(run, Report(run_id=run.run_id, state=RunState.CANCELLED,
                                               headline=reason))
                return
            except Exception as e:  # noqa: BLE001 - a failed run is reported, never lost
                ref = hashlib.sha1(f"{run.run_id}{e!r}".encode()).hexdigest()[:8]
                log.exception("run failed", ref=ref)
                await self._finish(run, Report(run_id=run.run_id, state=RunState.FAILED,
                                               headline=f"internal error (ref `{ref}`)"))
                return
            finally:
                self._active.pop(run.run_id, None)
            await self._settle(run, config)

    async def _stream(self, run: RunRef, inputs: Any, config: dict[str, Any]) -> None:
        checklist = self._checklist(run)
        async for part in self.graph.astream(inputs, config, stream_mode=["updates", "custom"],
                                             version="v2", durability="sync"):
            if part["type"] == "custom":
                data = part["data"]
                checklist.step(data["step"], data["text"], StepState(data["state"]),
                               data.get("detail", ""))
                await self.surface.progress(run, checklist)
            elif part["type"] == "updates":
                self._audit_update(run, part["data"])

    async def _settle(self, run: RunRef, config: dict[str, Any]) -> None:
        snapshot = await self.graph.aget_state(config)
        if snapshot.interrupts:
            for interrupt in snapshot.interrupts:
                request = await self.desk.ask(run, interrupt.id, interrupt.value)
                self._checklist(run).step(request.call_id, request.summary, StepState.WAITING,
                                          f"waiting for approval by {request.rule.describe()}")
            self.runs.set_state(run.run_id, RunState.WAITING)
            checklist = self._checklist(run)
            checklist.state = RunState.WAITING
            await self.surface.progress(run, checklist, final=True)
            return
        report = Report.model_validate(snapshot.values.get("report") or {
            "run_id": run.run_id, "state": RunState.FAILED, "headline": "the run produced no report"})
        await self._finish(run, report)

    async def _finish(self, run: RunRef, report: Report) -> None:
        self.runs.set_state(run.run_id, report.state)
        checklist = self._checklist(run)
        checklist.state = report.state
        await self.surface.progress(run, checklist, final=True)
        await self.surface.report(run, report)
        self.audit.record("report", run.run_id, state=report.state.value,
                          headline=report.headline, calls=[c.model_dump() for c in report.calls])
        self._ended[run.run_id] = self._checklists.pop(run.run_id, checklist)
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    async def _interrupted(self, run: RunRef) -> None:
        self.runs.set_state(run.run_id, RunState.INTERRUPTED)
        self.audit.record("run.state", run.run_id, state=RunState.INTERRUPTED.value)
        await self.surface.say(run, f"Run `{run.run_id}` was interrupted: opsbot stopped while it "
                                    "was running. Nothing is retried automatically; check the "
                                    "target's state and run the command again if needed.")
        checklist = self._checklist(run)
        checklist.state = RunState.INTERRUPTED
        await self.surface.progress(run, checklist, final=True)

    def _queue_resume(self, run: RunRef, request: ApprovalRequest) -> None:
        self._queue.put_nowait(lambda: self._resume(run, request))

    # helpers ------------------------------------------------------------------------------

    def _config(self, run: RunRef) -> dict[str, Any]:
        return {"configurable": {"thread_id": run.thread_id},
                "recursion_limit": self.recursion_limit}

    def _checklist(self, run: RunRef) -> Checklist:
        if run.run_id in self._ended:
            return self._ended[run.run_id]
        if run.run_id not in self._checklists:
            self._checklists[run.run_id] = Checklist(run_id=run.run_id, headline=_headline(run.task))
        return self._checklists[run.run_id]

    @asynccontextmanager
    async def _thread_lock(self, thread_id: str) -> AsyncIterator[None]:
        """One drive of a LangGraph thread at a time; the lock is dropped when nobody holds or
        waits for it, so a long-lived bot doesn't keep one per Slack thread ever seen."""
        lock = self._locks.setdefault(thread_id, asyncio.Lock())
        self._lock_users[thread_id] += 1
        try:
            async with lock:
                yield
        finally:
            self._lock_users[thread_id] -= 1
            if not self._lock_users[thread_id]:
                del self._lock_users[thread_id], self._locks[thread_id]

    def _waiting_in_thread(self, run: RunRef) -> str:
        for other, _ in self.runs.in_states(RunState.WAITING, thread_id=run.thread_id):
            if other.run_id != run.run_id:
                return (f"run `{other.run_id}` in this thread is waiting for approval; decide it "
                        f"or `/ops cancel {other.run_id}` first")
        return ""

    def _audit_update(self, run: RunRef, update: dict[str, Any]) -> None:
        policy = update.get("policy")
        if not policy:
            return
        for call_id, review in policy.get("reviews", {}).items():
            self.audit.record("policy", run.run_id, run.task.user, call_id=call_id,
                              verdict=review["verdict"], tier=review["tier"], rule=review["rule"],
                              reason=review["reason"], action=review.get("canonical"),
                              hash=review.get("hash"))


def _bind(run: RunRef) -> None:
    """Every log line of this job carries the run, its requester and channel."""
    structlog.contextvars.bind_contextvars(run_id=run.run_id, user=run.task.user,
                                           channel=run.task.channel)


def _headline(task: Task) -> str:
    if task.alert is not None:
        return f"incident: {task.alert.title[:80]}"
    return f"`{task.text[:80]}`" if task.text else ""
