"""The task API's bodies, as pydantic models: they validate requests, shape responses and
generate the OpenAPI document's schemas (``bot/api/openapi.py``), so the three never drift."""

from __future__ import annotations

from datetime import datetime
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from approvals.models import ApprovalRequest
from graph.surface import Checklist, RunRef, RunState, StepState

CHANNEL = r"^[CGD][A-Z0-9]{2,20}$"
TEXT = 4000  # as a slash command's text (graph/commands.py MAX_TEXT)


class RunRequest(BaseModel):
    """A run to start: a typed command (one action, as after ``/ops``) or a question for the
    agent, reported in ``channel`` (default: the token's first channel)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [{"required": ["command"]}, {"required": ["question"]}],
        "examples": [{"command": "redis info section=memory", "channel": "C0123ABCD"},
                     {"question": "why is the cache slow?"}]})

    command: str | None = Field(None, min_length=1, max_length=TEXT,
                                description="a typed command, e.g. `redis info section=memory`")
    question: str | None = Field(None, min_length=1, max_length=TEXT,
                                 description="a question for the agent (needs an unscoped token)")
    channel: str | None = Field(None, pattern=CHANNEL,
                                description="the Slack channel id the run reports in")

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.command is None) == (self.question is None):
            raise ValueError("give exactly one of `command` or `question`")
        return self

    @property
    def text(self) -> str:
        return self.command or self.question or ""


class Step(BaseModel):
    """One line of the run's live checklist (its Slack status message)."""

    key: str
    text: str
    state: StepState
    detail: str = ""


class Approval(BaseModel):
    id: str
    summary: str
    target: str
    tier: int
    status: str
    approvers: str = Field(description="who may decide")
    expires_at: datetime
    decided_by: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, request: ApprovalRequest) -> Approval:
        return cls(id=request.id, summary=request.summary, target=request.target,
                   tier=request.tier, status=request.status.value,
                   approvers=request.rule.describe(), expires_at=request.expires_at,
                   decided_by=list(request.deciders))


class CallResult(BaseModel):
    summary: str
    invocation: str
    status: str = Field(description="ok, no_data, error, denied ...")
    output: str = ""
    note: str = ""


class RunReport(BaseModel):
    state: RunState
    headline: str = ""
    calls: list[CallResult] = Field(default_factory=list)


class Run(BaseModel):
    """A run as the API shows it: state, live steps, approvals, and the report once it ended."""

    id: str
    state: RunState
    source: str
    requester: str
    channel: str
    text: str
    steps: list[Step] = Field(default_factory=list)
    approvals: list[Approval] = Field(default_factory=list)
    report: RunReport | None = None

    @classmethod
    def of(cls, run: RunRef, state: RunState, checklist: Checklist | None,
           approvals: list[ApprovalRequest], report: RunReport | None) -> Run:
        steps = [Step(key=s.key, text=s.text, state=s.state, detail=s.detail)
                 for s in (checklist.steps if checklist else [])]
        return cls(id=run.run_id, state=state, source=run.task.source.value,
                   requester=run.task.user, channel=run.task.channel, text=run.task.text,
                   steps=steps, approvals=[Approval.of(a) for a in approvals], report=report)


class Cancelled(BaseModel):
    id: str
    state: RunState
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
