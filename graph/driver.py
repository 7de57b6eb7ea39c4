"""The worker side of runs: a job in, one drive of its LangGraph thread, the run settled.

Every drive holds the thread's lease (:mod:`graph.lease`) and decides under it, from the run's
row and the thread's checkpoint, what the job means now:

* the run already ended (cancelled, say) → nothing (a final state is a fence);
* ``start`` of a run that never started → start it;
* ``resume`` whose approval is decided and whose interrupt is still pending → resume with the
  decision read from the approval row (never from the job's arguments);
* the thread stopped at its approvals → settle (re-post cards that are missing);
* the thread stopped mid-flight (its previous drive died) → continue from the last
  checkpoint; an action that was executing is not run again (the execute guard reports it
  as interrupted);
* anything else (a duplicate click's resume, say) → nothing.

Settling posts cards and records ``waiting``, or posts the report and records the final state.
The report is posted before the status message's last edit, which may wait for Slack's edit
pacing: the answer never does. Nor does it wait for the revocation of the run's credentials
(graph/cleanup.py), which the run's end awaits before the run is recorded as ended.
A user's cancel reaches a running drive as a cancellation of its job; the reason was written
to the run's row first, which is how a cancel is told from a shutdown.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from enum import Enum
from typing import Any

import structlog
from langchain_core.messages import AIMessageChunk
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from opentelemetry.trace import SpanKind

from approvals.models import ApprovalRequest
from graph import metrics, tracing
from graph.cleanup import Cleanup
from graph.deps import Memory
from graph.desk import ApprovalDesk
from graph.lease import Lease
from graph.nodes import GraphState
from graph.memory import recollect
from graph.queue import Job, JobKind, JobQueue, lane_for, remember_job, start_job
from graph.records import Records
from graph.records.base import RunRow
from graph.surface import Checklist, Report, RunRef, RunState, StepState, Surface
from graph.task import Task

log = structlog.get_logger("opsbot.runs")
Graphs = Callable[[], AbstractAsyncContextManager[CompiledStateGraph]]
INTERRUPTED_NOTICE = ("Run `{run_id}` was interrupted: opsbot stopped while it was running. "
                      "Nothing is retried automatically; check the target's state and run the "
                      "command again if needed.")


class Plan(Enum):
    START = "start"
    RESUME = "resume"
    CONTINUE = "continue"
    SETTLE = "settle"
    NOTHING = "nothing"


NOTE = "note:"  # the key prefix of a step noted from outside the drive (RunManager.annotate)


@dataclass
class Checklists:
    """Status-message checklists of the runs this process is touching; the run's row is the
    truth between processes (loaded on first use, saved when a run settles).

    Notes (an alert's status, added by whichever process received it) are the row's: a drive
    takes them from the row before it saves or shows its final state, so a note added by an
    ingress while a worker drives the run is neither overwritten nor left off the message."""

    records: Records

    def __post_init__(self) -> None:
        self._live: dict[str, Checklist] = {}

    async def of(self, run: RunRef, row: RunRow | None = None) -> Checklist:
        if run.run_id not in self._live:
            row = row or await self.records.runs.row(run.run_id)
            self._live[run.run_id] = (row.checklist if row and row.checklist else
                                      Checklist(run_id=run.run_id, headline=headline(run.task)))
        return self._live[run.run_id]

    async def note(self, run_id: str, key: str, text: str, state: StepState
                   ) -> tuple[RunRow, Checklist] | None:
        """Note a line on the run's checklist as its row has it (locked: notes and saves from
        several processes don't lose each other's lines), and on this process's copy if it
        drives the run too; the row and the checklist to show, or None for no such run."""
        async with self.records.transaction() as tx:
            row = await tx.runs.row(run_id, lock=True)
            if row is None:
                return None
            checklist = row.checklist or Checklist(run_id=run_id, headline=headline(row.run.task))
            checklist.state = row.state
            checklist.step(NOTE + key, text, state)
            await tx.runs.update(run_id, checklist=checklist)
        live = self._live.get(run_id)
        if live is not None:
            live.step(NOTE + key, text, state)
        return row, checklist

    async def take_notes(self, run_id: str) -> None:
        """Copy onto this process's checklist the notes other processes added to the row."""
        live = self._live.get(run_id)
        if live is not None:
            _noted(live, await self.records.runs.row(run_id))

    async def save(self, run_id: str, state: RunState | None = None, done: bool = False) -> None:
        checklist = self._live.get(run_id)
        if checklist is not None:
            async with self.records.transaction() as tx:  # the row's notes, then this copy
                _noted(checklist, await tx.runs.row(run_id, lock=True))
                await tx.runs.update(run_id, state=state, checklist=checklist)
        elif state is not None:
            await self.records.runs.update(run_id, state=state)
        if done:
            self._live.pop(run_id, None)


def _noted(checklist: Checklist, row: RunRow | None) -> None:
    for step in (row.checklist.steps if row and row.checklist else []):
        if step.key.startswith(NOTE):
            checklist.step(step.key, step.text, step.state, step.detail)


class Driver:
    def __init__(self, graphs: Graphs, records: Records, queue: JobQueue, lease: Lease,
                 surface: Surface, desk: ApprovalDesk, checklists: Checklists, *,
                 cleanup: Cleanup, recursion_limit: int = 60,
                 streams: Callable[[Task], bool] = lambda task: False,
                 memory: Memory | None = None):
        self.graphs = graphs
        self.records = records
        self.queue = queue
        self.lease = lease
        self.surface = surface
        self.desk = desk
        self.checklists = checklists
        self.recursion_limit = recursion_limit
        self.streams = streams  # whether a task's run is answered by the model (streamed)
        self.memory = memory
        self.cleanup = cleanup  # the graph's own (GraphDeps.cleanup): its revocations

    async def handle(self, job: Job) -> None:
        """Drive ``job``'s run (raises :class:`graph.lease.LeaseBusy` to be retried later), in
        a span of the run's trace; or remember a run that ended."""
        if job.kind is JobKind.REMEMBER:
            # one remembering of a run at a time, reading the records under the lease: a run
            # remembered at its report and again when its incident resolves must not have the
            # older recollection written last (seen: the resolution lost under load)
            async with self.lease.hold(job.thread_id):
                await self._remember(job.run_id)
            return
        with tracing.tracer.start_as_current_span(
                f"run.drive {job.kind.value}", context=tracing.context_of(job.trace),
                kind=SpanKind.CONSUMER, attributes={"opsbot.run_id": job.run_id,
                                                    "opsbot.job": job.kind.value,
                                                    "opsbot.lane": job.lane.value}):
            await self._handle(job)

    async def _handle(self, job: Job) -> None:
        async with self.lease.hold(job.thread_id):
            row, request = await asyncio.gather(self.records.runs.row(job.run_id),
                                                self._decided(job))
            if row is None or row.state.final:
                log.info("job skipped: run ended or unknown", run_id=job.run_id,
                         kind=job.kind.value)
                return
            bind(row.run)
            run = row.run
            if job.kind is JobKind.START and row.state is RunState.QUEUED:
                run, opened = await self._open(run, row)  # a command's run opens its thread here
                if not opened:
                    return
            async with self._thread(job, run), self.graphs() as graph:
                began = time.time()
                try:
                    if row.stop_reason and request is None:  # stopped before this drive began
                        await self._stopped(run, row.stop_reason)
                    else:
                        await self._drive(graph, job, row, run, request)
                except asyncio.CancelledError:  # a stop's abort, wherever the drive was
                    reason = await self._stop_reason(run.run_id)
                    if not reason:
                        raise  # opsbot is shutting down, not a stop of the run
                    asyncio.current_task().uncancel()
                    await self._stopped(run, reason)
                finally:  # the span a test checks for overlaps: one drive of a thread at a time
                    await self.cleanup.finish(run.run_id)  # a drive ends with its revocations
                    log.info("drive.span", thread_id=run.thread_id, run_id=run.run_id,
                             began=began, ended=time.time())

    def _thread(self, job: Job, run: RunRef) -> AbstractAsyncContextManager[None]:
        """The lease of the thread the run lives in, when the job was keyed otherwise (a
        start that opened its thread just now): a click on its card waits for this drive."""
        if job.thread_id == run.thread_id:
            return nullcontext()
        return self.lease.hold(run.thread_id)

    async def lost_jobs(self) -> list[Job]:
        """Embedded mode at start: the jobs an in-memory queue lost when its process died."""
        jobs = []
        for run, state in await self.records.runs.in_states(RunState.QUEUED, RunState.RUNNING,
                                                           RunState.WAITING):
            lane = lane_for(run.task)
            if state is RunState.WAITING:  # decided approvals whose resume died with the process
                jobs += [Job(JobKind.RESUME, run.run_id, run.thread_id, lane, r.id,
                             trace=run.trace)
                         for r in await self.records.approvals.for_run(run.run_id)
                         if r.status.final]
            elif state is RunState.QUEUED:
                jobs.append(start_job(run))
            else:
                jobs.append(Job(JobKind.CONTINUE, run.run_id, run.thread_id, lane,
                                trace=run.trace))
        return jobs

    # deciding ----------------------------------------------------------------------------

    async def _drive(self, graph: CompiledStateGraph, job: Job, row: RunRow, run: RunRef,
                     request: ApprovalRequest | None) -> None:
        config = self._config(run)
        snapshot = await graph.aget_state(config)
        plan, inputs = _plan(job, row, snapshot, request)
        log.info("drive", kind=job.kind.value, plan=plan.value)
        if plan is Plan.NOTHING:
            return
        if plan is Plan.START:
            busy = await self._waiting_in_thread(run)
            if busy:
                await self._finish(run, Report(run_id=run.run_id, state=RunState.CANCELLED,
                                               headline=busy))
                return
        with tracing.agent_span(run.run_id, run.thread_id, job.kind.value):
            if plan is Plan.SETTLE:
                await self._settle(graph, run, config)
                return
            await self._run_graph(graph, run, row, inputs, config)

    async def _decided(self, job: Job) -> ApprovalRequest | None:
        """The approval a resume job carries (read alongside the run's row)."""
        if job.kind is not JobKind.RESUME:
            return None
        return await self.records.approvals.get(job.approval_id or "")

    # driving -----------------------------------------------------------------------------

    async def _open(self, run: RunRef, row: RunRow) -> tuple[RunRef, bool]:
        """Post the run's status message (once) and record where it lives; False when the run
        was stopped while the message was being posted (a cancel decides on a queued run at
        once): it ends there, its message showing so, and nothing of it runs."""
        if run.status_ts is not None:
            return run, True
        checklist = await self.checklists.of(run, row)
        checklist.state = RunState.RUNNING
        run = run.model_copy(update={"stream": self.streams(run.task)})
        run = await self.surface.open_run(run, checklist)
        async with self.records.transaction() as tx:  # serialised with a stop of this run
            now = await tx.runs.row(run.run_id, lock=True)
            opened = now is not None and now.state is RunState.QUEUED
            await tx.runs.update(run.run_id, run=run,
                                 **({"state": RunState.RUNNING} if opened else {}))
        if not opened:
            log.info("run stopped while it opened", run_id=run.run_id)
            checklist.state = now.state if now is not None else RunState.CANCELLED
            await self.checklists.take_notes(run.run_id)
            await self.surface.progress(run, checklist, final=True)
        return run, opened

    async def _run_graph(self, graph: CompiledStateGraph, run: RunRef, row: RunRow,
                         inputs: Any, config: dict[str, Any]) -> None:
        await self.records.runs.set_state(run.run_id, RunState.RUNNING)
        (await self.checklists.of(run, row)).state = RunState.RUNNING  # resumed: no longer waiting
        try:
            await self._stream(graph, run, row, inputs, config)
        except Exception as e:  # noqa: BLE001 - a failed run is reported, never lost
            ref = hashlib.sha1(f"{run.run_id}{e!r}".encode()).hexdigest()[:8]
            log.exception("run failed", ref=ref)
            await self._finish(run, Report(run_id=run.run_id, state=RunState.FAILED,
                                           headline=f"internal error (ref `{ref}`)"))
            return
        await self._settle(graph, run, config)

    async def _stream(self, graph: CompiledStateGraph, run: RunRef, row: RunRow, inputs: Any,
                      config: dict[str, Any]) -> None:
        checklist = await self.checklists.of(run, row)
        modes = ["updates", "custom", *(["messages"] if run.stream else [])]
        async for part in graph.astream(inputs, config, stream_mode=modes,
                                        version="v2", durability="sync"):
            if part["type"] == "messages":
                await self._written(run, *part["data"])
            elif part["type"] == "custom":
                data = part["data"]
                checklist.step(data["step"], data["text"], StepState(data["state"]),
                               data.get("detail", ""))
                await self.surface.progress(run, checklist)
            elif part["type"] == "updates":
                await self._audit_update(run, part["data"])

    async def _written(self, run: RunRef, chunk: Any, meta: dict[str, Any]) -> None:
        """A token of the model's reply (LangGraph's ``messages`` stream), to the surface."""
        if meta.get("langgraph_node") != "agent" or not isinstance(chunk, AIMessageChunk):
            return
        tools = bool(chunk.tool_call_chunks)
        text = str(chunk.text)
        if text or tools:
            await self.surface.answer(run, chunk.id or "", text, tools=tools)

    async def _stopped(self, run: RunRef, reason: str) -> None:
        await self._finish(run, Report(run_id=run.run_id, state=RunState.CANCELLED,
                                       headline=reason))

    async def _stop_reason(self, run_id: str) -> str:
        row = await asyncio.shield(self.records.runs.row(run_id))
        return row.stop_reason if row else ""

    # settling ----------------------------------------------------------------------------

    async def _settle(self, graph: CompiledStateGraph, run: RunRef, config: dict[str, Any]) -> None:
        snapshot = await graph.aget_state(config)
        if not snapshot.interrupts:
            report = Report.model_validate(snapshot.values.get("report") or {
                "run_id": run.run_id, "state": RunState.FAILED,
                "headline": "the run produced no report"})
            await self._finish(run, report)
            return
        async with self.records.transaction() as tx:  # serialised with a cancel of this run
            row = await tx.runs.row(run.run_id, lock=True)
            stopped = row.stop_reason if row is not None else ""
            if not stopped:
                requests = [await self.desk.ask(tx, run, i.id, i.value) for i in snapshot.interrupts]
        if stopped:
            await self._finish(run, Report(run_id=run.run_id, state=RunState.CANCELLED,
                                           headline=stopped))
            return
        checklist = await self.checklists.of(run)
        for request in requests:
            await self.desk.show(run, request)
            checklist.step(request.call_id, request.summary, StepState.WAITING,
                           f"waiting for approval by {request.rule.describe()}")
        checklist.state = RunState.WAITING
        await self.checklists.save(run.run_id, RunState.WAITING)  # once its cards are out
        await self.surface.progress(run, checklist, final=True)

    async def _finish(self, run: RunRef, report: Report) -> None:
        with tracing.tracer.start_as_current_span("run.report", attributes={
                "opsbot.run_id": run.run_id, "opsbot.outcome": report.state.value,
                "opsbot.calls": len(report.calls)}):
            await self._report(run, report)

    async def _report(self, run: RunRef, report: Report) -> None:
        """The answer first, as new messages (they never wait for the status message's edit
        pacing); then the status message's last state, under its own pacing; then the record."""
        checklist = await self.checklists.of(run)
        checklist.state = report.state
        await self.checklists.take_notes(run.run_id)
        if report.state is RunState.INTERRUPTED:
            await self.surface.say(run, INTERRUPTED_NOTICE.format(run_id=run.run_id))
            await self.records.audit.record("run.state", run.run_id, state=report.state.value)
        await self.surface.report(run, report)
        await self.surface.progress(run, checklist, final=True)
        await self.cleanup.finish(run.run_id)  # credentials revoked before the run is "ended"
        await self.checklists.save(run.run_id, report.state, done=True)
        await self.records.audit.record("report", run.run_id, state=report.state.value,
                                        headline=report.headline, answer=report.answer[:4000],
                                        calls=[c.model_dump() for c in report.calls])
        metrics.run_ended(run.task, lane_for(run.task).value, report.state.value)
        if self.memory is not None:  # after the report, on whichever worker takes the job
            async with self.records.transaction() as tx:
                await self.queue.defer(tx, remember_job(run))

    async def _remember(self, run_id: str) -> None:
        """Index an ended run in the memory of past incidents (a worker without one skips)."""
        recollection = await recollect(self.records, run_id) if self.memory else None
        if recollection is not None and self.memory is not None:
            with tracing.tracer.start_as_current_span("memory.remember",
                                                      attributes={"opsbot.run_id": run_id}):
                await self.memory.remember(recollection)
            log.info("run remembered", run_id=run_id)

    # helpers -----------------------------------------------------------------------------

    def _config(self, run: RunRef) -> dict[str, Any]:
        return {"configurable": {"thread_id": run.thread_id},
                "recursion_limit": self.recursion_limit}

    async def _waiting_in_thread(self, run: RunRef) -> str:
        for other, _ in await self.records.runs.in_states(RunState.WAITING,
                                                          thread_id=run.thread_id):
            if other.run_id != run.run_id:
                return (f"run `{other.run_id}` in this thread is waiting for approval; decide it "
                        f"or `/ops cancel {other.run_id}` first")
        return ""

    async def _audit_update(self, run: RunRef, update: dict[str, Any]) -> None:
        policy = update.get("policy")
        if not policy:
            return
        for call_id, review in policy.get("reviews", {}).items():
            await self.records.audit.record(
                "policy", run.run_id, run.task.user, call_id=call_id, verdict=review["verdict"],
                tier=review["tier"], rule=review["rule"], reason=review["reason"],
                action=review.get("canonical"), hash=review.get("hash"))


def _waited(request) -> None:
    """The approval's wait, as a span of the run's trace (recorded once it is decided)."""
    if request.decided_at is not None:
        tracing.waited("approval.wait", request.created_at, request.decided_at,
                       **{"opsbot.approval_id": request.id, "opsbot.outcome": request.status.value,
                          "opsbot.tier": request.tier, "opsbot.deciders": len(request.deciders)})


def _stopped_at_approvals(snapshot: Any) -> bool:
    return bool(snapshot.interrupts) and all(
        t.interrupts or t.result is not None for t in snapshot.tasks)


def _decision(request) -> dict[str, Any]:
    return {"approval_id": request.id, "status": request.status.value, "by": request.deciders,
            "reason": request.denial_reason, "hash": request.action_hash}


def bind(run: RunRef) -> None:
    """Every log line of this job carries the run, its requester and channel."""
    structlog.contextvars.bind_contextvars(run_id=run.run_id, user=run.task.user,
                                           channel=run.task.channel)


def headline(task: Task) -> str:
    if task.alert is not None:
        return f"incident: {task.alert.title[:80]}"
    return f"`{task.text[:80]}`" if task.text else ""


def _plan(job: Job, row: RunRow, snapshot: Any, request: ApprovalRequest | None
          ) -> tuple[Plan, Any]:
    """What a drive does with the thread's checkpoint (and a resume's decided approval)."""
    mine = (snapshot.values or {}).get("run_id") == job.run_id
    pending = {i.id for i in snapshot.interrupts}
    if job.kind is JobKind.RESUME:
        if request is None or not request.status.final or not mine:
            return Plan.NOTHING, None
        if request.interrupt_id in pending:
            _waited(request)
            return Plan.RESUME, Command(resume={request.interrupt_id: _decision(request)})
        if snapshot.next and not pending:  # resumed once, and that drive died mid-flight
            return Plan.CONTINUE, None
        return Plan.NOTHING, None  # another drive already took this decision further
    if not mine:
        if row.state in (RunState.QUEUED, RunState.RUNNING):
            return Plan.START, {"run_id": job.run_id, "task": row.run.task.model_dump(mode="json")}
        return Plan.NOTHING, None
    if _stopped_at_approvals(snapshot):
        return Plan.SETTLE, None
    if snapshot.next:
        return Plan.CONTINUE, None
    return Plan.SETTLE, None
