"""Work a run owes after an action that its answer need not wait for.

Revoking an action's credentials (and writing the ``credential.revoke`` audit row) costs a
Vault round trip or two, ~10 ms of a warm action's ~80 (issue 16). The action is over when
the sandbox answers; the container is being destroyed in the background already. So the
execute node hands the revocation to :class:`Cleanup`, which starts it at once, off the
critical path, and the guarantees stay:

* **still done**: the run's end awaits its cleanup (the driver, after the answer is posted and
  before the run is recorded as ended), and so does the process's shutdown;
* **still audited**: the ``credential.revoke`` row is part of the work;
* **even on a crash**: the ``credential.lease`` row was written before the action ran; a
  process killed before the revocation leaves that row without its ``credential.revoke``,
  and the next start revokes it (``graph/leases.revoke_orphaned``).

Usage::

    cleanup.start(run_id, revoke_and_audit(lease))   # returns at once
    await cleanup.finish(run_id)                      # the run's end
    await cleanup.close()                             # shutdown: everything still under way
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger("opsbot.cleanup")


class Cleanup:
    def __init__(self) -> None:
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}

    def start(self, run_id: str, work: Coroutine[Any, Any, None]) -> None:
        """Begin ``work`` now, in the background, on behalf of ``run_id``."""
        task = asyncio.get_running_loop().create_task(self._guarded(work),
                                                      name=f"cleanup-{run_id}")
        tasks = self._tasks.setdefault(run_id, set())
        tasks.add(task)
        task.add_done_callback(lambda done: self._forget(run_id, done))

    def pending(self, run_id: str | None = None) -> int:
        if run_id is not None:
            return len(self._tasks.get(run_id, ()))
        return sum(len(tasks) for tasks in self._tasks.values())

    async def finish(self, run_id: str) -> None:
        """Until ``run_id``'s cleanup is done (shielded: a cancelled caller does not stop it)."""
        while tasks := self._tasks.get(run_id):
            await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))

    async def close(self) -> None:
        """Until every run's cleanup is done."""
        while self._tasks:
            every = [t for tasks in self._tasks.values() for t in tasks]
            await asyncio.gather(*every, return_exceptions=True)

    def _forget(self, run_id: str, task: asyncio.Task[None]) -> None:
        tasks = self._tasks.get(run_id)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._tasks[run_id]

    @staticmethod
    async def _guarded(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:  # noqa: BLE001 - the lease's audit row lets the next start revoke it
            log.exception("cleanup failed")
