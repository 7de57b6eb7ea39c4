"""The record interfaces both storage modes implement (see the package docstring).

Each store is a small abstract class: a backend writes the SQL, the shared helpers here (and
the approval logic in :mod:`approvals.store`) stay the same in both modes. Every method is
async; the SQLite backend runs its statements inline (they take microseconds), PostgreSQL
awaits its pool.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from approvals.store import ApprovalStore
from graph import tracing
from graph.surface import Checklist, RunRef, RunState
from tools.secrets import REDACTOR, Redactor

DEDUPE_WINDOW_S = 6 * 3600  # Slack retries for ~5 minutes, PagerDuty for ~20; keep hours
REFUSALS = ("approval.rejected", "execute.refused", "run.refused", "cancel.refused")
SPEND = ("input_tokens", "output_tokens", "total_tokens", "calls")  # AuditLog.llm_spend


@dataclass
class RunRow:
    """One run as recorded: where it lives, its state, and what only the database remembers
    across processes (the status-message checklist, why it was stopped)."""

    run: RunRef
    state: RunState
    checklist: Checklist | None = None
    stop_reason: str = ""


@dataclass(frozen=True)
class RunFilter:
    """Which runs a listing shows (every field optional; all given must match)."""

    run_id: str | None = None
    channel: str | None = None
    state: RunState | None = None
    source: str | None = None
    requester: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100

    def conditions(self) -> list[tuple[str, Any]]:
        """``(column and operator, value)`` for each condition that is set (the backends
        add their placeholder after each)."""
        state = self.state.value if self.state else None
        found = [("id =", self.run_id), ("channel =", self.channel), ("state =", state), ("source =", self.source),
                 ("requester =", self.requester), ("created_at >=", self.since),
                 ("created_at <", self.until)]
        return [(column, value) for column, value in found if value]


@dataclass(frozen=True)
class RunListing:
    """One run in a listing: where it lives, its state, when it began and last changed."""

    run: RunRef
    state: RunState
    created_at: datetime
    updated_at: datetime


class RunStore(ABC):
    """One row per run."""

    @abstractmethod
    async def add(self, run: RunRef, state: RunState = RunState.QUEUED) -> None: ...

    @abstractmethod
    async def row(self, run_id: str, lock: bool = False) -> RunRow | None:
        """The run's row; ``lock`` holds it until the transaction ends (PostgreSQL)."""

    @abstractmethod
    async def update(self, run_id: str, *, run: RunRef | None = None,
                     state: RunState | None = None, checklist: Checklist | None = None,
                     stop_reason: str | None = None) -> None: ...

    @abstractmethod
    async def in_states(self, *states: RunState, channel: str | None = None,
                        thread_id: str | None = None) -> list[tuple[RunRef, RunState]]: ...

    @abstractmethod
    async def latest_in_thread(self, thread_id: str) -> tuple[RunRef, RunState] | None: ...

    @abstractmethod
    async def for_alert(self, alert_id: str) -> tuple[RunRef, RunState] | None: ...

    @abstractmethod
    async def listing(self, where: RunFilter = RunFilter()) -> list[RunListing]:
        """Runs matching ``where``, newest first, at most ``where.limit`` (the web console)."""

    @abstractmethod
    async def count_started(self, since: datetime, *, requester: str | None = None,
                            channel: str | None = None, lock: bool = False) -> int:
        """Runs recorded since ``since`` (whatever their state), of this requester and/or in
        this channel. ``lock`` (inside a transaction): submits counting the same requester or
        channel wait for this transaction to end, so a burst can't all pass one count
        (PostgreSQL; a SQLite transaction already excludes every other)."""

    async def get(self, run_id: str) -> tuple[RunRef, RunState] | None:
        row = await self.row(run_id)
        return (row.run, row.state) if row else None

    async def save(self, run: RunRef) -> None:
        await self.update(run.run_id, run=run)

    async def set_state(self, run_id: str, state: RunState) -> None:
        await self.update(run_id, state=state)


class AuditLog(ABC):
    """The append-only audit log: one row per thing that happened, joined by run id.

    Rows are never updated or deleted (the database refuses it). Every payload passes through
    the redactor before it is written, so a secret value can't land here even by mistake.
    """

    redactor: Redactor = REDACTOR

    async def record(self, kind: str, run_id: str | None, actor: str | None = None,
                     **data: Any) -> None:
        """Append one row; while a trace is being recorded, its id is in the row's data
        (``trace_id``), to find the row's trace and the trace's rows."""
        traced = tracing.trace_id()
        if traced is not None:
            data["trace_id"] = traced
        body = json.dumps(self.redactor.redact_obj(data), default=str, sort_keys=True)
        await self._insert(kind, run_id, actor, body)

    @abstractmethod
    async def _insert(self, kind: str, run_id: str | None, actor: str | None,
                      body: str) -> None: ...

    @abstractmethod
    async def story(self, run_id: str) -> list[dict[str, Any]]:
        """Every row of one run, oldest first, ``data`` decoded."""

    @abstractmethod
    async def rows(self, kinds: tuple[str, ...] = (), run_id: str | None = None,
                   limit: int = 200) -> list[dict[str, Any]]:
        """Rows of these kinds (all kinds when empty), newest first."""

    @abstractmethod
    async def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent runs: id, first and last row time, row count."""

    @abstractmethod
    async def llm_spend(self, channel: str, since: datetime) -> dict[str, int]:
        """Tokens the model calls (``llm.call`` rows) of runs in ``channel`` used since
        ``since``: ``input_tokens``, ``output_tokens``, ``total_tokens``, ``calls``."""

    @abstractmethod
    async def open_leases(self, since: datetime) -> list[dict[str, Any]]:
        """Credential leases recorded since ``since`` with no successful revocation (what a
        crash left open), oldest first: ``{"run_id", "call_id", "data"}`` each."""


class Dedupe(ABC):
    """Remembers delivery ids (Slack ``event_id``, PagerDuty ``X-Webhook-Id``) across restarts."""

    @abstractmethod
    async def first_time(self, key: str) -> bool:
        """True exactly once per key (an atomic insert)."""

    @abstractmethod
    async def prune(self, older_than_s: float = DEDUPE_WINDOW_S) -> int:
        """Forget keys seen longer ago than that; returns how many."""


@dataclass(frozen=True)
class AlertGroup:
    """One alert group (e.g. Alertmanager's ``groupKey``) as recorded: the run investigating
    its current firing episode (None until the run is submitted) and whether it still fires."""

    key: str
    run_id: str | None
    firing: bool


class AlertGroups(ABC):
    """Which run investigates each firing alert group, shared by every ingress process.

    A group fires, repeats while firing, resolves, and may fire again later: each firing
    episode gets one run. ``open`` is the atomic claim of an episode (exactly one caller wins,
    in whichever process); the winner submits the run and ``bind``s it.
    """

    @abstractmethod
    async def open(self, key: str) -> bool:
        """True for exactly one caller when ``key`` is new or its last episode resolved (the
        group now fires, with no run yet); False while it already fires."""

    @abstractmethod
    async def bind(self, key: str, run_id: str) -> None: ...

    @abstractmethod
    async def get(self, key: str) -> AlertGroup | None: ...

    @abstractmethod
    async def resolve(self, key: str) -> AlertGroup | None:
        """Mark the group resolved; returns it as it was (None: never seen)."""


class Executions(ABC):
    """The execute guard: a unique row per (run, call) inserted before the side effect."""

    @abstractmethod
    async def claim(self, run_id: str, call_id: str, action_hash: str, worker: str) -> bool:
        """True for the first attempt at this call; False when one already started (which may
        or may not have acted: never repeat it)."""

    @abstractmethod
    async def finish(self, run_id: str, call_id: str, status: str) -> None: ...

    @abstractmethod
    async def finished_calls(self, run_id: str) -> set[str]:
        """Call ids of this run whose execution ended (whatever the outcome)."""

    @abstractmethod
    async def count(self, run_id: str | None = None) -> int: ...


class TokenRows(ABC):
    """Bearer tokens as stored: an id, the SHA-256 of the secret, the token's record as JSON
    (the model and its rules live with their users, ``bot/tokens.py``)."""

    @abstractmethod
    async def add(self, token_id: str, digest: str, record: str) -> None: ...

    @abstractmethod
    async def get(self, token_id: str) -> tuple[str, str] | None:
        """``(record, digest)`` of a token, or None."""

    @abstractmethod
    async def all(self) -> list[str]: ...

    @abstractmethod
    async def update(self, token_id: str, record: str) -> None: ...


@dataclass(frozen=True)
class ScheduleRow:
    """What one schedule last did: the latest tick fired (a run started for it, or claimed by
    another process), and the latest result reported (a digest to compare with the next one,
    and a line to show in ``/ops schedules``)."""

    name: str
    tick: datetime | None = None
    run_id: str | None = None
    state: str = ""
    result: str = ""  # digest of the last reported result ("" before any)
    summary: str = ""
    posted: bool = False
    reported_at: datetime | None = None


class ScheduleRows(ABC):
    """One row per schedule name (schedules themselves live in ``OPSBOT_SCHEDULES``)."""

    @abstractmethod
    async def get(self, name: str, lock: bool = False) -> ScheduleRow | None:
        """The schedule's row; ``lock`` holds it until the transaction ends (PostgreSQL)."""

    @abstractmethod
    async def all(self) -> list[ScheduleRow]: ...

    @abstractmethod
    async def fired(self, name: str, tick: datetime, run_id: str | None) -> None:
        """Record ``tick`` as fired (never moving it back); ``run_id`` when this process
        started its run."""

    @abstractmethod
    async def reported(self, name: str, state: str, result: str, summary: str,
                       posted: bool) -> None:
        """Record the latest result of the schedule's runs."""


class Listings(ABC):
    """The tools each MCP server listed when a worker last asked it (JSON-shaped tool specs):
    ingress processes, which run no sandbox, build the same catalog from these."""

    @abstractmethod
    async def save(self, server: str, tools: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    async def all(self) -> dict[str, list[dict[str, Any]]]: ...


@dataclass(frozen=True)
class FeedbackRow:
    """One person's rating of one run's report (👍 ``up`` / 👎 ``down``), with their comment."""

    run_id: str
    user: str
    rating: str
    comment: str
    at: datetime


class FeedbackStore(ABC):
    """Ratings of reports: one per person and run (a later click replaces theirs)."""

    @abstractmethod
    async def rate(self, run_id: str, user: str, rating: str) -> None: ...

    @abstractmethod
    async def comment(self, run_id: str, user: str, comment: str) -> str | None:
        """Attach a comment to the person's rating of the run; returns that rating (None:
        they have not rated it)."""

    @abstractmethod
    async def since(self, since: datetime | None = None) -> list[FeedbackRow]:
        """Ratings given (or changed) since ``since`` (all when None), oldest first."""


class Records(ABC):
    """Every store of one deployment, and transactions spanning them."""

    tokens: TokenRows
    listings: Listings
    schedules: ScheduleRows
    alert_groups: AlertGroups
    runs: RunStore
    approvals: ApprovalStore
    audit: AuditLog
    dedupe: Dedupe
    executions: Executions
    feedback: FeedbackStore
    mode: str  # "sqlite" or "postgres"

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """Records bound to one transaction: everything written through it (and every job
        deferred with it) commits together or not at all."""

    @abstractmethod
    async def ping(self) -> str:
        """``ok``, or a sentence saying why the database does not answer."""

    @abstractmethod
    async def close(self) -> None: ...


class Tx(Records):
    """A :class:`Records` bound to one open transaction."""

    connection: Any  # the backend's connection (procrastinate defers jobs on it)

    @abstractmethod
    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the transaction has committed (never if it rolls back)."""


def spend_sql(field: Callable[[str], str], param: str) -> str:
    """``AuditLog.llm_spend``'s query, given how the backend reads a number out of an audit
    row's JSON and how it writes a parameter; one column per name in ``SPEND``."""
    sums = ", ".join(f"coalesce(sum({field(k)}), 0) as {k}" for k in SPEND[:3])
    return (f"select {sums}, count(*) as calls from audit a join runs r on r.id = a.run_id "
            f"where a.kind = 'llm.call' and a.ts >= {param} and r.channel = {param}")


def iso(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value
