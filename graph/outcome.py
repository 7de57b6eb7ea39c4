"""Waiting for a run's end from outside the run: for callers that hold a request open (an MCP
client's tool call, the task API) while the run may execute on another process.

Nothing here relies on in-memory callbacks of the process that runs the graph: the run's
state is read from the run store (:func:`wait_for_end` polls it; that one function is where a
PostgreSQL LISTEN/NOTIFY can replace the poll), and its result from the audited report, which
every process can read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from graph.records import AuditLog, RunStore
from graph.surface import CallReport, RunState

POLL_S = 0.1
OnState = Callable[[RunState], Awaitable[None]]


async def wait_for_end(runs: RunStore, run_id: str, on_state: OnState | None = None,
                       tick: Callable[[], Awaitable[None]] | None = None,
                       poll_s: float = POLL_S) -> RunState:
    """The run's final state. ``on_state`` hears each state change; ``tick`` runs on every
    poll (a caller's keep-alive, e.g. progress notifications while a run waits)."""
    last: RunState | None = None
    while True:
        found = await runs.get(run_id)
        state = found[1] if found else RunState.FAILED
        if state != last and on_state is not None:
            await on_state(state)
        last = state
        if state.final:
            return state
        if tick is not None:
            await tick()
        await asyncio.sleep(poll_s)


async def reported_calls(audit: AuditLog, run_id: str, poll_s: float = POLL_S,
                         patience_s: float = 5.0) -> list[CallReport]:
    """The calls of the run's audited report (written right after its final state)."""
    report = await reported(audit, run_id, poll_s, patience_s)
    return [CallReport.model_validate(c) for c in (report or {}).get("calls", [])]


async def reported(audit: AuditLog, run_id: str, poll_s: float = POLL_S,
                   patience_s: float = 5.0) -> dict[str, Any] | None:
    """The run's audited report (``state``, ``headline``, ``calls``), waiting up to
    ``patience_s`` for it; None if it is not there by then."""
    deadline = asyncio.get_running_loop().time() + patience_s
    while True:
        rows = [r for r in await audit.story(run_id) if r["kind"] == "report"]
        if rows:
            return rows[-1]["data"]
        if asyncio.get_running_loop().time() > deadline:
            return None
        await asyncio.sleep(poll_s)
