"""The small interface between a run and wherever its people are (Slack, a terminal, a test).

The graph and the run manager talk only to a :class:`Surface`. Each run has one status message
(``progress`` edits it in place), approval cards, and one final report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel

from approvals.models import ApprovalRequest
from graph.task import Task


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def final(self) -> bool:
        return self in (RunState.DONE, RunState.FAILED, RunState.CANCELLED, RunState.INTERRUPTED)


class RunRef(BaseModel):
    """Where a run lives: its id, its task, and the Slack thread/status message once opened."""

    run_id: str
    task: Task
    thread_ts: str | None = None
    status_ts: str | None = None
    trace: str = ""  # W3C traceparent of the run's trace (graph/tracing.py); empty: not traced
    # the model's answer is streamed into the status message (Slack's chat.*Stream): set by
    # the driver for agent runs, cleared by a surface that can't stream there
    stream: bool = False

    @property
    def thread_id(self) -> str:
        return self.task.thread_id(self.thread_ts)


class StepState(StrEnum):
    PENDING = "pending"  # proposed, not started yet
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    WAITING = "waiting"
    SKIPPED = "skipped"


ICONS = {
    StepState.PENDING: "🕒",
    StepState.RUNNING: "⏳",
    StepState.OK: "✅",
    StepState.FAILED: "❌",
    StepState.WAITING: "✋",
    StepState.SKIPPED: "⏭️",
}


@dataclass
class Step:
    key: str
    text: str
    state: StepState = StepState.RUNNING
    detail: str = ""

    def line(self) -> str:
        detail = f" — {self.detail}" if self.detail else ""
        return f"{ICONS[self.state]} {self.text}{detail}"


@dataclass
class Checklist:
    """The live status of a run: a headline plus one line per step, in order."""

    run_id: str
    state: RunState = RunState.QUEUED
    headline: str = ""
    steps: list[Step] = field(default_factory=list)

    def step(self, key: str, text: str, state: StepState, detail: str = "") -> None:
        for existing in self.steps:
            if existing.key == key:
                existing.text, existing.state, existing.detail = text, state, detail
                return
        self.steps.append(Step(key, text, state, detail))

    def dump(self) -> dict[str, Any]:
        """JSON-shaped, for the run's row (another process may drive the run next)."""
        return asdict(self)

    @classmethod
    def load(cls, data: dict[str, Any]) -> Checklist:
        steps = [Step(s["key"], s["text"], StepState(s["state"]), s.get("detail", ""))
                 for s in data.get("steps", [])]
        return cls(run_id=data["run_id"], state=RunState(data.get("state", "queued")),
                   headline=data.get("headline", ""), steps=steps)

    def render(self) -> str:
        head = f"*opsbot* `{self.run_id}` · {self.state.value}"
        if self.headline:
            head += f" · {self.headline}"
        return "\n".join([head, *(s.line() for s in self.steps)])


class CheckReport(BaseModel):
    """Whether a change held: its follow-up check (``tools.base.Check``) and the evidence."""

    invocation: str
    expect: str  # what "fixed" means
    held: bool | None = None  # None: the check could not tell (not run, or it failed)
    evidence: str = ""
    note: str = ""  # why it was not run, e.g. the policy's sentence

    @property
    def verdict(self) -> str:
        return {True: "fixed", False: "not fixed"}.get(self.held, "not checked")  # type: ignore[arg-type]


class CallReport(BaseModel):
    summary: str
    invocation: str
    command: str = ""  # the call as a typed command (``redis info section=memory``)
    status: str
    output: str = ""
    note: str = ""  # policy/approval outcome, e.g. "denied by <@U2>: not during peak"
    check: CheckReport | None = None  # after a change: did the fix hold?
    tier: int = 0  # the action's tier as policy reviewed it (2 and up change something)


class Citation(BaseModel):
    title: str
    path: str


class Report(BaseModel):
    """The final word of a run."""

    run_id: str
    state: RunState
    headline: str
    answer: str = ""
    calls: list[CallReport] = []
    citations: list[Citation] = []
    similar: list[str] = []  # past incidents recalled (graph/memory.py): "incident #… on …, fixed by …"
    usage: str = ""
    draftable: bool = False  # a runbook can be drafted from it (graph.memory.worth_remembering)


class Surface(Protocol):
    async def open_run(self, run: RunRef, checklist: Checklist) -> RunRef:
        """Post the run's status message (starting a thread if needed); returns the located run."""

    async def progress(self, run: RunRef, checklist: Checklist, final: bool = False) -> None:
        """Show the checklist; may coalesce, but ``final=True`` must land before returning."""

    async def answer(self, run: RunRef, reply_id: str, text: str, tools: bool = False) -> None:
        """A piece of the model's reply ``reply_id`` as it is written (``tools``: that reply
        turned out to ask for tools, so what it wrote is not the answer). A surface that can't
        stream ignores it: the report carries the whole answer."""

    async def ask_approval(self, run: RunRef, request: ApprovalRequest) -> str | None:
        """Post an approval card; returns its message id (Slack ts) if the surface has one."""

    async def update_approval(self, run: RunRef, request: ApprovalRequest) -> None:
        """Show a decided/expired card (no buttons)."""

    async def report(self, run: RunRef, report: Report) -> None:
        """Post the final report as a reply in the run's thread."""

    async def say(self, run: RunRef, text: str) -> None:
        """A plain reply in the run's thread (notices such as 'interrupted')."""

    async def refused(self, task: Task, text: str) -> None:
        """Tell a task's requester, and only them, why no run was started for it."""
