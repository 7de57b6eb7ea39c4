"""Scheduled runs in Slack: remembered always, shown when their ``post`` rule says so.

:class:`ScheduledSurface` wraps the process's surface. Runs that no schedule started pass
straight through. A scheduled run's report is remembered in its schedule's row (a digest of
the result, to compare with the next run's, and a line for ``/ops schedules``); whether it is
shown follows the schedule's ``post``:

* ``always``: like any run (status message at once, then the report in its thread);
* ``on_change``: only when the result differs from the previous run's (the first one shows);
* ``on_failure``: only when the run failed, was cancelled, or an action failed or was denied.

A quiet run posts nothing until it has to: its status message is opened when it needs an
approval (a card never waits unseen), says something (an interruption), or reports a result
that is to be shown. Until then the run lives in a thread of its own (``quiet-<run id>``, no
Slack message); once opened, ``status_ts`` on the run's row is that message, and every call
is translated to its Slack thread.
"""

from __future__ import annotations

import hashlib
import json

from approvals.models import ApprovalRequest
from graph.records import Records
from graph.surface import Checklist, Report, RunRef, RunState, Surface
from graph.task import Post, Task

QUIET = "quiet-"
FAILED_CALLS = ("error", "denied")


class ScheduledSurface:
    """:class:`graph.surface.Surface` that applies schedules' ``post`` rules."""

    def __init__(self, inner: Surface, records: Records):
        self.inner = inner
        self.records = records
        self._checklists: dict[str, Checklist] = {}

    async def open_run(self, run: RunRef, checklist: Checklist) -> RunRef:
        if not quiet(run):
            return await self.inner.open_run(run, checklist)
        return run.model_copy(update={"thread_ts": run.thread_ts or QUIET + run.run_id,
                                      "stream": False})  # opened later, if at all: no stream

    async def progress(self, run: RunRef, checklist: Checklist, final: bool = False) -> None:
        if not quiet(run):
            await self.inner.progress(run, checklist, final)
            return
        self._checklists[run.run_id] = checklist
        shown = await self._shown(run)
        if shown is not None:
            await self.inner.progress(shown, checklist, final)
        if final:
            self._checklists.pop(run.run_id, None)

    async def answer(self, run: RunRef, reply_id: str, text: str, tools: bool = False) -> None:
        shown = await self._shown(run) if quiet(run) else run
        if shown is not None:
            await self.inner.answer(shown, reply_id, text, tools)

    async def ask_approval(self, run: RunRef, request: ApprovalRequest) -> str | None:
        return await self.inner.ask_approval(await self._opened(run), request)

    async def update_approval(self, run: RunRef, request: ApprovalRequest) -> None:
        await self.inner.update_approval(await self._shown(run) or run, request)

    async def report(self, run: RunRef, report: Report) -> None:
        fired = run.task.schedule
        if fired is None:
            await self.inner.report(run, report)
            return
        shown = await self._shown(run)
        if await self._remember(fired.name, fired.post, report, shown is not None):
            await self.inner.report(shown or await self._opened(run), report)

    async def say(self, run: RunRef, text: str) -> None:
        await self.inner.say(await self._opened(run), text)

    async def refused(self, task: Task, text: str) -> None:
        await self.inner.refused(task, text)

    # where a quiet run is shown ------------------------------------------------------------

    async def _shown(self, run: RunRef) -> RunRef | None:
        """The run as the inner surface knows it, once its status message exists."""
        if not quiet(run):
            return run
        status = run.status_ts
        if status is None:
            row = await self.records.runs.row(run.run_id)
            status = row.run.status_ts if row else None
        if status is None:
            return None
        return run.model_copy(update={"thread_ts": status, "status_ts": status})

    async def _opened(self, run: RunRef) -> RunRef:
        shown = await self._shown(run)
        if shown is not None:
            return shown
        checklist = self._checklists.get(run.run_id) or Checklist(run_id=run.run_id)
        opened = await self.inner.open_run(run.model_copy(update={"thread_ts": None,
                                                                  "stream": False}), checklist)
        status = opened.status_ts or opened.thread_ts
        await self.records.runs.update(run.run_id,
                                       run=run.model_copy(update={"status_ts": status}))
        return opened

    async def _remember(self, name: str, post: Post, report: Report, shown: bool) -> bool:
        """Record the result (compared with the previous one under the row's lock); True
        when the report is to be posted."""
        result = digest(report)
        async with self.records.transaction() as tx:
            row = await tx.schedules.get(name, lock=True)
            changed = row is None or row.result != result
            speaks = shown or _speaks(post, report, changed)
            await tx.schedules.reported(name, report.state.value, result, summary(report),
                                        speaks)
        return speaks


def quiet(run: RunRef) -> bool:
    fired = run.task.schedule
    return fired is not None and fired.post is not Post.ALWAYS


def _speaks(post: Post, report: Report, changed: bool) -> bool:
    if post is Post.ON_CHANGE:
        return changed
    if post is Post.ON_FAILURE:
        return failed(report)
    return True


def failed(report: Report) -> bool:
    return report.state is not RunState.DONE or any(c.status in FAILED_CALLS
                                                    for c in report.calls)


def digest(report: Report) -> str:
    """What "the same result" means: the outcome, each action's status and output, the answer."""
    shape = {"state": report.state.value, "answer": report.answer,
             "calls": [[c.invocation, c.status, c.output, c.note] for c in report.calls]}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()


def summary(report: Report) -> str:
    """One line for ``/ops schedules``."""
    first = report.calls[0] if report.calls else None
    text = report.answer or (first.output or first.note or first.status if first else "")
    line = " ".join((text or report.headline).split())
    return f"{report.state.value}: {line[:120]}" if line else report.state.value
