"""Memory of past incidents: what each investigation found and did, indexed in Qdrant and
recalled for the next one with similar symptoms.

When a run ends, and again when its PagerDuty incident resolves, a *remember* job
(``graph/queue.py``, maintenance lane, taken by whichever worker is free: never on the report's
critical path) reads the run back from the records — the trigger, the report (findings, the
actions taken with their outcome and follow-up check), the incident's resolution, feedback —
and upserts one point per run into the ``incidents`` collection, beside the runbooks: the same
Qdrant client (local mode allows one per directory) and the same embedding model.

New investigations recall the closest past runs above a similarity floor and cite them next to
the runbooks ("similar: incident #4412 on 2026-11-20, fixed by …"). That text quotes alerts,
tool output and a model's words: it is untrusted, and reaches the model framed as such.

Usage::

    memory = IncidentMemory(index)              # a RunbookIndex: its client and embedder
    memory.remember(await recollect(records, run_id))
    memory.recall("redis is evicting keys", 3)  # [PastIncident(...)]
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from graph.records import Records
from graph.surface import CallReport, RunState
from graph.task import Source, Task
from tools.secrets import REDACTOR

if TYPE_CHECKING:
    from tools.runbooks import RunbookIndex

COLLECTION = "incidents"
MIN_SIMILARITY = 0.5  # cosine, all-MiniLM-L6-v2: see tests/graph/test_memory.py for the pairs
NAMESPACE = uuid.UUID("0f6b8f0c-3a43-4c6e-9a51-8d7e2f1b6c22")
FINDINGS_CHARS = 1500
RAN = ("ok", "no_data", "error")  # a call's statuses once it was executed (not denied, pending)
EMBEDDED_FINDINGS = 400


class Deed(BaseModel):
    """One action a run took: what, how it went, and whether its follow-up check held."""

    summary: str
    status: str
    tier: int = 0
    note: str = ""
    check: str = ""  # "fixed" / "not fixed" / "not checked" / "" (no check declared)
    invocation: str = ""  # as the target system saw it (``INFO memory``)
    command: str = ""  # as typed after /ops (``redis info section=memory``): a draft lists reads

    @property
    def helped(self) -> bool:
        """A change (tier 2 and up: a draft, an executed change) that ran and did not fail its
        check; reads are evidence, not fixes."""
        return self.tier >= 2 and self.status == "ok" and self.check != "not fixed"


class Recollection(BaseModel):
    """What opsbot remembers of one run."""

    run_id: str
    day: date
    channel: str
    trigger: str
    incident: str = ""  # the PagerDuty incident id, when an alert started the run
    service: str = ""
    findings: str = ""
    deeds: list[Deed] = []
    resolution: str = ""
    feedback: list[str] = []
    state: str = ""

    @property
    def point_id(self) -> str:
        return str(uuid.uuid5(NAMESPACE, self.run_id))

    def embed_text(self) -> str:
        """The symptoms first: a new incident is matched on what it looks like."""
        service = f" ({self.service})" if self.service else ""
        return f"{self.trigger}{service}\n{self.findings[:EMBEDDED_FINDINGS]}"

    @property
    def fixed_by(self) -> str:
        helped = [d.summary for d in self.deeds if d.helped]
        return "; ".join(helped) or self.resolution or "no recorded fix"

    def cite(self) -> str:
        """``incident #Q1 on 2026-11-20 (run r-…), fixed by …``"""
        what = f"incident #{self.incident}" if self.incident else f"run {self.run_id}"
        run = f" (run {self.run_id})" if self.incident else ""
        return f"{what} on {self.day.isoformat()}{run}, fixed by {self.fixed_by}"

    def for_model(self) -> str:
        """The body of a ``<past_incident>`` element in the agent's opening message."""
        lines = [f"trigger: {self.trigger}", f"findings: {self.findings or 'none recorded'}"]
        lines += [f"action: {d.summary} -> {d.status}" + (f", check {d.check}" if d.check else "")
                  for d in self.deeds]
        if self.resolution:
            lines.append(f"resolution: {self.resolution}")
        lines += [f"feedback: {f}" for f in self.feedback]
        text = "\n".join(lines).replace("<", "&lt;").replace(">", "&gt;")  # can't close its tag
        return REDACTOR.redact(text)


class PastIncident(BaseModel):
    """A recalled run and how close it is to the new one."""

    score: float
    past: Recollection


class IncidentMemory:
    """Past runs in their own Qdrant collection, over a :class:`RunbookIndex`'s client and
    embedder. Synchronous and CPU-bound (embedding): async callers use a thread."""

    def __init__(self, index: RunbookIndex, collection: str = COLLECTION,
                 floor: float = MIN_SIMILARITY):
        self.index = index
        self.collection = collection
        self.floor = floor

    def remember(self, recollection: Recollection) -> None:
        """Insert or replace the run's point (a run remembered again, once resolved, say)."""
        from qdrant_client import models

        vector = self.index.embedder.embed([recollection.embed_text()])[0].tolist()
        payload = {**recollection.model_dump(mode="json"), "model": self.index.embedder.name}
        with self.index.qdrant() as client:
            self._ensure(client)
            client.upsert(self.collection, points=[
                models.PointStruct(id=recollection.point_id, vector=vector, payload=payload)])

    def recall(self, query: str, limit: int = 3, exclude: str = "") -> list[PastIncident]:
        """The closest past runs at or above the similarity floor, best first."""
        vector = self.index.embedder.embed([query])[0].tolist()
        with self.index.qdrant() as client:
            if not client.collection_exists(self.collection):
                return []
            points = client.query_points(self.collection, query=vector, limit=limit + 1,
                                         with_payload=True).points
        found = [_past(p) for p in points
                 if p.score >= self.floor and self._model_is_current(p.payload or {})]
        return [f for f in found if f is not None and f.past.run_id != exclude][:limit]

    def _ensure(self, client: Any) -> None:
        from qdrant_client import models

        if not client.collection_exists(self.collection):
            params = models.VectorParams(size=self.index.embedder.dim,
                                         distance=models.Distance.COSINE)
            client.create_collection(self.collection, vectors_config=params)

    def _model_is_current(self, payload: dict[str, Any]) -> bool:
        return payload.get("model") == self.index.embedder.name


def _past(point: Any) -> PastIncident | None:
    payload = dict(point.payload or {})
    payload.pop("model", None)
    try:
        return PastIncident(score=round(point.score, 4), past=Recollection.model_validate(payload))
    except ValueError:  # a point written by another version: not worth failing a run over
        return None


async def recollect(records: Records, run_id: str) -> Recollection | None:
    """The run as remembered, from its row and audit rows; None for a run not worth
    remembering (still going, or neither an incident, an investigation, nor a change)."""
    row = await records.runs.row(run_id)
    if row is None or not row.state.final:
        return None
    story = await records.audit.story(run_id)
    task = row.run.task
    report = next((r["data"] for r in reversed(story) if r["kind"] == "report"), {})
    deeds = [_deed(CallReport.model_validate(c)) for c in report.get("calls", [])]
    if not worth_remembering(task, any(r["kind"] == "llm.run" for r in story), deeds):
        return None
    return Recollection(
        run_id=run_id, day=task.created_at.date(), channel=task.channel,
        trigger=task.alert.title if task.alert else task.text,
        incident=task.alert.id if task.alert else "",
        service=task.alert.service if task.alert else "",
        findings=(report.get("answer") or "")[:FINDINGS_CHARS],
        deeds=deeds,
        resolution=_resolution(story, row.state, report), feedback=_feedback(story),
        state=row.state.value)


def worth_remembering(task: Task, investigated: bool, calls: list[Deed] | list[CallReport]
                      ) -> bool:
    """What the memory keeps and a runbook is drafted from (one rule, so a report's "Save as
    runbook" button never offers what the draft then refuses): an incident, an investigation
    (the model gave its word), or a change that ran — not the draft PR a runbook became."""
    if task.source is Source.RUNBOOK:
        return False
    ran_a_change = any(c.tier >= 2 and c.status in RAN for c in calls)
    return task.alert is not None or investigated or ran_a_change


def _deed(call: CallReport) -> Deed:
    return Deed(summary=call.summary, status=call.status, tier=call.tier, note=call.note,
                check=call.check.verdict if call.check else "", invocation=call.invocation,
                command=call.command)


def _resolution(story: list[dict[str, Any]], state: RunState, report: dict[str, Any]) -> str:
    for row in reversed(story):
        data = row["data"]
        if row["kind"] == "alert.status" and data.get("status") == "resolved":
            who = f" by {data['agent']}" if data.get("agent") else ""
            return f"resolved in PagerDuty{who} on {str(row['ts'])[:10]}"
    if state is RunState.CANCELLED:
        return report.get("headline", "")
    return ""


def _feedback(story: list[dict[str, Any]]) -> list[str]:
    """People's ratings of the run (``feedback`` rows: a rating and an optional comment)."""
    said = []
    for row in story:
        if row["kind"] == "feedback":
            data = row["data"]
            rating = data.get("rating") or data.get("value") or ""
            comment = f": {data['comment']}" if data.get("comment") else ""
            said.append(f"{rating}{comment}".strip())
    return [s for s in said if s]
