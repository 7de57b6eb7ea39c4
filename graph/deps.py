"""What the graph's nodes need from the outside world, as small protocols.

The concrete pieces (the Docker sandbox runner, the Vault broker, the runbook index, the LLM)
are built by ``bot/wiring.py`` and passed in; tests pass the same real pieces.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import SecretStr

from graph.cleanup import Cleanup
from graph.records import AuditLog, Executions
from graph.policy import Policy
from sandbox.protocol import SandboxOutcome, SandboxRequest
from tools.base import SecretRef
from tools.catalog import Catalog

if TYPE_CHECKING:
    from graph.memory import PastIncident, Recollection


class Executor(Protocol):
    async def run(
        self,
        request: SandboxRequest,
        on_progress: Callable[[str], Awaitable[None]] | None = None,
    ) -> SandboxOutcome: ...


class Lease(Protocol):
    values: Mapping[str, SecretStr]

    def audit(self) -> dict[str, Any]: ...


class Broker(Protocol):
    async def mint(
        self, run_id: str, call_id: str, secrets: list[SecretRef], ttl_s: float
    ) -> Lease: ...

    async def revoke(self, lease: Lease) -> None: ...


class RunbookHitLike(Protocol):
    title: str
    path: str
    score: float
    snippet: str
    commands: list[str]


class Runbooks(Protocol):
    async def search(self, query: str, limit: int = 3) -> list[RunbookHitLike]: ...


class Memory(Protocol):
    """Past incidents (``graph/memory.py``): remembered when runs end, recalled by new ones."""

    async def recall(self, query: str, limit: int = 3, exclude: str = "") -> list[PastIncident]: ...

    async def remember(self, recollection: Recollection) -> None: ...


@dataclass(frozen=True)
class Limits:
    """Hard caps on a run. Hitting one ends the run with a report naming the cap."""

    max_tool_rounds: int = 6
    max_wall_s: float = 600.0
    max_tokens: int = 60_000
    recursion_limit: int = 60
    tool_output_chars: int = 6_000
    max_calls_per_round: int = 8  # more in one model turn are answered "not run", with why
    max_parallel_per_run: int = 4  # sandboxed actions of one run at once; the rest wait


class RunSlots:
    """At most ``limit`` holders per key at a time; the rest wait their turn. Keyed by run: at
    most so many sandboxed actions (or previews) of one run (the sandbox runner caps the whole
    process the same way); keyed by thread with a limit of one: the embedded lease.

    Usage::

        async with slots.hold(run_id, limit=4, waiting=lambda: emit(...)):
            await executor.run(request)
    """

    def __init__(self) -> None:
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._users: Counter[str] = Counter()

    @asynccontextmanager
    async def hold(self, run_id: str, limit: int,
                   waiting: Callable[[], None] | None = None) -> AsyncIterator[None]:
        gate = self._gates.setdefault(run_id, asyncio.Semaphore(limit))
        self._users[run_id] += 1
        try:
            if gate.locked() and waiting is not None:
                waiting()
            async with gate:
                yield
        finally:
            self._users[run_id] -= 1
            if not self._users[run_id]:
                del self._users[run_id], self._gates[run_id]


@dataclass
class GraphDeps:
    catalog: Catalog
    policy: Policy
    executor: Executor
    broker: Broker
    audit: AuditLog
    executions: Executions | None = None  # execution rows: the execute guard
    guard: bool = True  # False only in the test that shows what the guard prevents
    worker: str = ""  # names this process in execution rows
    runbooks: Runbooks | None = None
    memory: Memory | None = None  # past incidents, recalled next to the runbooks
    llm: Any = None  # a LangChain chat model (ChatOpenAI) or None when not configured
    model_name: str = ""
    limits: Limits = field(default_factory=Limits)
    trace_content: bool = False  # prompts and answers on chat spans (OPSBOT_TRACE_CONTENT)
    run_slots: RunSlots = field(default_factory=RunSlots)
    cleanup: Cleanup = field(default_factory=Cleanup)  # revocations after the answer
