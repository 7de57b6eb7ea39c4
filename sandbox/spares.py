"""Per-run egress networks created ahead of demand, each used by one cold box, then removed.

Creating a cold egress box's internal network is ~50–60 ms of the engine's time (issue 16:
of a cold action's ~500 ms); it does not depend on the request, so a few are made ahead and
a cold box takes one. Taking one starts its replacement in the background. A spare network
has no container and no firewall rules yet: nothing can reach anything through it until a box
is created on it, and the box's rules go in before that box starts (box.py). Spares carry
the instance's labels (``opsbot.pool=network``), so a crashed opsbot's spares are reaped like
its containers.

Usage (the provisioner owns one)::

    spares = SpareNetworks(make, drop, size=2)
    spares.fill()
    network = spares.take()   # NetworkInfo, or None: create one on the spot
    await spares.close()      # removes what is left
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from sandbox.engine import EngineError, NetworkInfo

log = structlog.get_logger(__name__)


class SpareNetworks:
    def __init__(self, make: Callable[[], Awaitable[NetworkInfo]],
                 drop: Callable[[NetworkInfo], Awaitable[None]], size: int):
        self._make_one, self._drop = make, drop
        self.size = size
        self._ready: list[NetworkInfo] = []
        self._making: set[asyncio.Task[None]] = set()
        self._closed = False

    def fill(self) -> None:
        """Top up to ``size`` in the background."""
        for _ in range(self.size - len(self._ready) - len(self._making)):
            task = asyncio.get_running_loop().create_task(self._make())
            self._making.add(task)
            task.add_done_callback(self._making.discard)

    def take(self) -> NetworkInfo | None:
        """A ready network (its replacement is started), or None."""
        if not self._ready or self._closed:
            return None
        network = self._ready.pop(0)
        self.fill()
        return network

    def ready(self) -> int:
        return len(self._ready)

    async def wait_ready(self) -> None:
        """Until the fills under way finish (tests and benchmarks use this)."""
        while self._making:
            await asyncio.gather(*list(self._making), return_exceptions=True)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._making):
            task.cancel()
        await asyncio.gather(*self._making, return_exceptions=True)
        ready, self._ready = self._ready, []
        await asyncio.gather(*(self._drop(n) for n in ready), return_exceptions=True)

    async def _make(self) -> None:
        """One network; cancellation-safe (a create already sent is finished, then dropped)."""
        work = asyncio.ensure_future(self._make_one())
        try:
            network = await asyncio.shield(work)
        except asyncio.CancelledError:
            made = (await asyncio.gather(work, return_exceptions=True))[0]
            if isinstance(made, NetworkInfo):
                await self._drop(made)
            raise
        except (EngineError, OSError) as e:  # cold boxes create their own until the next fill
            log.warning("sandbox.spares.fill_failed", error=str(e)[:300])
            return
        if self._closed:
            await self._drop(network)
            return
        self._ready.append(network)
