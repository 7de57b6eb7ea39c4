"""The warm pool: containers created and started ahead of time, each used once.

Starting a container costs about as much as a whole ``docker run true`` (sandbox/README.md has
the numbers), and Python plus pydantic plus the connectors take another ~120 ms to import. A
pooled box has paid both: its entrypoint is running and blocked reading stdin. Taking one
leaves only writing the request, running the action and reading the result on the action's
critical path. A taken box is never
returned: the runner destroys it, and the pool starts a replacement in the background.

There are two kinds, because a network namespace is fixed when a container starts:
``none`` (no network at all) and ``egress`` (alone on its own confined internal network, whose
forwarders are opened when the box is taken; the declared endpoint names are then appended to
its hosts file, see box.py).

Besides those two, a toolset may ask for a kind of its own (``SandboxRequest.warm``): a
container that runs a given command ahead of the request, with the mounts the request
declares, e.g. an MCP server already started and initialised, waiting for one call. Such a
kind is added on its first request (which goes cold) and kept at one ready container; a newer
kind of the same family (the toolset's, after its recipe changed) retires the older one.

Pooled containers are created before any request exists, so their ``opsbot.run_id``,
``opsbot.call_id`` and ``opsbot.action`` labels are empty and ``opsbot.pool`` names the kind;
Docker cannot relabel a container, so the runner renames it after the call once taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from sandbox.box import Box, Provisioner
from sandbox.engine import EngineError
from sandbox.firewall import FirewallError
from sandbox.hardening import POOLED, Identity, pooled
from tools.base import Mount

log = structlog.get_logger(__name__)

KINDS = ("none", "egress")
READY_TIMEOUT_S = 60.0
PATIENCE_S = 3.0  # how long a run waits for a fill under way before going cold
RECENT_S = 60.0  # demand is counted over this window (the pool's size follows it)


class Housekeeping:
    """Engine work that follows an action (removal, renaming, the pool's refill) waits up to
    ``delay_s``, off the answer's path; :meth:`hurry` lets everything waiting go now (settle,
    close, tests)."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self._hurry = asyncio.Event()

    async def wait(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), self.delay_s)

    def hurry(self) -> None:
        """Release what waits now; work deferred later waits afresh."""
        self._hurry.set()
        self._hurry = asyncio.Event()


@dataclass(frozen=True)
class Kind:
    """What the containers of one kind are made with. ``size`` None: the pool's size."""

    name: str
    egress: bool
    command: tuple[str, ...] = tuple(POOLED)
    mounts: tuple[Mount, ...] = ()
    size: int | None = None
    family: str = ""  # a newer kind of the same family retires this one (e.g. per toolset)


class WarmPool:
    def __init__(self, provisioner: Provisioner, instance: str, size: int, ceiling: int = 0,
                 housekeeping: Housekeeping | None = None,
                 preload: Sequence[str] | None = None):
        self.provisioner = provisioner
        # a replacement for a taken box starts later: the run that took it is still on its
        # way to its answer, and a container start competes with it for the CPU
        self.housekeeping = housekeeping or Housekeeping()
        self.instance = instance
        self.size = size
        self.ceiling = max(size, ceiling)  # the most one common kind grows to under load
        self._demand: dict[str, deque[float]] = {}  # when runs asked for a box, per kind
        self.recent_s = RECENT_S
        self._kinds = {name: Kind(name, egress=name == "egress", command=pooled(preload))
                       for name in KINDS}
        self._ready: dict[str, list[Box]] = {kind: [] for kind in KINDS}
        self._filling: set[asyncio.Task[None]] = set()
        self._arrival = asyncio.Event()
        self._closed = False

    def fill(self) -> None:
        """Top every kind up to its size in the background."""
        for kind in self._kinds.values():
            self._top_up(kind)

    def _top_up(self, kind: Kind, deferred: bool = False) -> None:
        missing = self.target(kind) - len(self._ready[kind.name]) - self._pending(kind.name)
        for _ in range(max(missing, 0)):
            self._spawn(kind.name, deferred)

    def target(self, kind: Kind) -> int:
        """How many boxes of ``kind`` to keep ready: the configured size, or, for the common
        kinds, as many as runs asked for in the last ``recent_s`` (up to ``ceiling``), so a
        burst's successors find boxes made ahead of them instead of starting cold."""
        if kind.size is not None:
            return min(kind.size, self.size)
        asked = self._demand.get(kind.name)
        recent = len(asked) if asked and self.size else 0
        return min(max(self.size, recent), self.ceiling)

    def _asked(self, kind: str) -> None:
        asked = self._demand.setdefault(kind, deque())
        now = time.monotonic()
        asked.append(now)
        while asked and asked[0] < now - self.recent_s:
            asked.popleft()

    def add(self, kind: Kind) -> bool:
        """Keep containers of ``kind`` ready from now on; False if it was already known."""
        if kind.name in self._kinds or self._closed:
            return False
        for old in [k for k in self._kinds.values() if kind.family and k.family == kind.family]:
            self._retire(old.name)
        self._kinds[kind.name] = kind
        self._ready[kind.name] = []
        self._top_up(kind)
        return True

    def kinds(self) -> list[Kind]:
        return list(self._kinds.values())

    def _retire(self, name: str) -> None:
        """Stop keeping ``name``: its ready boxes go (fills under way are dropped on arrival)."""
        del self._kinds[name]
        for box in self._ready.pop(name, []):
            self._spawn_destroy(box)

    async def take(self, egress: bool | str, patience: float = PATIENCE_S) -> Box | None:
        """A ready box of the right kind (a replacement is started), or None.

        When none is ready but one is being prepared, wait for it (up to ``patience``): it is
        further along than a cold start would be, and a cold start would only compete with
        it for the CPU."""
        kind = egress if isinstance(egress, str) else KINDS[egress]
        if kind not in self._kinds:
            return None
        self._asked(kind)
        if not self._ready[kind] and not self._pending(kind):
            # ran dry (fills that failed, e.g. a start slower than READY_TIMEOUT_S on a loaded
            # host, are not retried on their own): refill for the next run, this one goes cold
            self._top_up(self._kinds[kind], deferred=True)
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while (box := self._take_ready(kind)) is None and self._pending(kind) and not (
            self._closed
        ):
            arrival = self._arrival
            try:
                await asyncio.wait_for(arrival.wait(), deadline - loop.time())
            except TimeoutError:
                return None
        return box

    def _take_ready(self, kind: str) -> Box | None:
        ready = self._ready[kind]
        while ready:
            box = ready.pop(0)
            if not self._closed and kind in self._kinds:
                # its replacement, and more if demand grew
                self._top_up(self._kinds[kind], deferred=True)
            if box.channel is not None and box.channel.alive():
                return box
            log.warning("sandbox.pool.dead_box", container=box.container[:12])
            self._spawn_destroy(box)
        return None

    def _spawn_destroy(self, box: Box) -> None:
        task = asyncio.get_running_loop().create_task(self.provisioner.destroy(box))
        self._filling.add(task)
        task.add_done_callback(self._filling.discard)

    def ready(self, kind: str) -> int:
        return len(self._ready[kind])

    def sizes(self) -> dict[str, int]:
        """Ready boxes per kind, a toolset's own kinds under its family (for metrics)."""
        sizes: dict[str, int] = {}
        for name, boxes in self._ready.items():
            kind = self._kinds.get(name)
            label = (kind.family or name) if kind else name
            sizes[label] = sizes.get(label, 0) + len(boxes)
        return sizes

    async def wait_ready(self) -> None:
        """Until the fills under way finish, deferred ones begun now (tests and benchmarks
        use this)."""
        while self._filling:
            self.housekeeping.hurry()
            await asyncio.gather(*list(self._filling), return_exceptions=True)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._filling):
            task.cancel()
        await asyncio.gather(*self._filling, return_exceptions=True)
        boxes = [box for ready in self._ready.values() for box in ready]
        self._ready = {kind: [] for kind in self._kinds}
        await asyncio.gather(*(self.provisioner.destroy(b) for b in boxes), return_exceptions=True)

    def _pending(self, kind: str) -> int:
        return sum(1 for task in self._filling if task.get_name() == f"pool-{kind}")

    def _spawn(self, kind: str, deferred: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(self._make(kind, deferred),
                                                      name=f"pool-{kind}")
        self._filling.add(task)
        task.add_done_callback(self._filled)

    def _filled(self, task: asyncio.Task[None]) -> None:
        """Wake runs waiting for a box (whether this fill succeeded or not)."""
        self._filling.discard(task)
        self._arrival.set()
        self._arrival = asyncio.Event()

    async def _make(self, name: str, deferred: bool = False) -> None:
        if deferred:
            await self.housekeeping.wait()
        kind = self._kinds.get(name)
        if kind is None or self._closed:  # retired (or closed) while it waited
            return
        identity = Identity(instance=self.instance, pool=name)
        try:
            box = await self.provisioner.create(identity, kind.egress, list(kind.command),
                                                mounts=kind.mounts)
        except (EngineError, OSError) as e:  # run cold until the next fill
            log.warning("sandbox.pool.fill_failed", kind=name, error=str(e)[:300])
            return
        try:
            ready = await self._warm(box)
        except BaseException:
            await self.provisioner.destroy(box)
            raise
        if not ready or self._closed or name not in self._kinds:
            await self.provisioner.destroy(box)
            return
        box.phases.clear()
        self._ready[name].append(box)

    async def _warm(self, box: Box) -> bool:
        """Start the box and wait until its entrypoint has imported everything."""
        try:
            await self.provisioner.attach_and_start(box)
            assert box.channel is not None
            async with asyncio.timeout(READY_TIMEOUT_S):
                if await box.channel.ready():
                    if box.network is not None:
                        await self.provisioner.locate_hosts(box)
                    return True
        except (EngineError, FirewallError, OSError, TimeoutError) as e:
            log.warning("sandbox.pool.start_failed", error=str(e)[:300])
            return False
        log.warning("sandbox.pool.start_failed", error="the entrypoint exited before ready")
        return False
