"""Work a run owes after an action that its answer need not wait for.

Revoking an action's credentials (and writing the ``credential.revoke`` audit row) costs a
Vault round trip or two, ~10 ms of a warm action's ~80 (issue 16). The action is over when
the sandbox answers: its entrypoint has exited, its forwarders are closed. So the execute node
hands the revocation to :class:`Cleanup`, which begins it as soon as the run's answer is out
(:meth:`Cleanup.finish`, called by the driver right after posting it), when the run's next
action is about to take credentials (:meth:`Cleanup.settle`, which also waits for it), or
``hold_s`` (0.1 s) after the action, whichever comes first: an investigation's next model
turn does not keep a credential alive. Begun "at once" instead, the revocation's thread and
Vault's own work took the CPU from the checkpoints and the answer that follow the result (a
warm action's report came 6-7 ms later on 2 CPUs). The guarantees stay:

* **still done**: the run's end awaits its cleanup (the driver, after the answer is posted and
  before the run is recorded as ended), and so does the process's shutdown;
* **still audited**: the ``credential.revoke`` row is part of the work;
* **even on a crash**: the ``credential.lease`` row was written before the action ran; a
  process killed before the revocation leaves that row without its ``credential.revoke``,
  and the next start revokes it (``graph/leases.revoke_orphaned``).

Usage::

    cleanup.start(run_id, revoke_and_audit(lease))   # returns at once
    await cleanup.finish(run_id)                      # the answer is out; the run's end
    await cleanup.close()                             # shutdown: everything still under way
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger("opsbot.cleanup")


HOLD_S = 0.1  # the longest a revocation waits for its run's answer


class Cleanup:
    def __init__(self, hold_s: float = HOLD_S) -> None:
        self.hold_s = hold_s
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}
        self._answered: dict[str, asyncio.Event] = {}

    def start(self, run_id: str, work: Coroutine[Any, Any, None]) -> None:
        """``work`` in the background on behalf of ``run_id``, begun by :meth:`settle` or
        :meth:`finish`, or ``hold_s`` from now, whichever comes first."""
        answered = self._answered.setdefault(run_id, asyncio.Event())
        task = asyncio.get_running_loop().create_task(
            self._after_answer(answered, work), name=f"cleanup-{run_id}")
        tasks = self._tasks.setdefault(run_id, set())
        tasks.add(task)
        task.add_done_callback(lambda done: self._forget(run_id, done))

    def pending(self, run_id: str | None = None) -> int:
        if run_id is not None:
            return len(self._tasks.get(run_id, ()))
        return sum(len(tasks) for tasks in self._tasks.values())

    def begin(self, run_id: str) -> None:
        """Begin what ``run_id`` holds now; work started later waits afresh."""
        if answered := self._answered.pop(run_id, None):
            answered.set()

    async def settle(self, run_id: str) -> None:
        """Begin what ``run_id`` owes now and wait for it (not for work started meanwhile):
        the run's next action is about to take credentials, and the previous ones' die first,
        however quickly the model asked for it."""
        self.begin(run_id)
        if tasks := self._tasks.get(run_id):
            await asyncio.shield(asyncio.gather(*list(tasks), return_exceptions=True))

    async def finish(self, run_id: str) -> None:
        """Begin ``run_id``'s cleanup now and wait until all of it is done, work started
        meanwhile included (shielded: a cancelled caller does not stop it)."""
        while run_id in self._tasks:
            await self.settle(run_id)

    async def close(self) -> None:
        """Until every run's cleanup is done (begun at once)."""
        for run_id in list(self._answered):
            self.begin(run_id)
        while self._tasks:
            every = [t for tasks in self._tasks.values() for t in tasks]
            await asyncio.gather(*every, return_exceptions=True)

    def _forget(self, run_id: str, task: asyncio.Task[None]) -> None:
        tasks = self._tasks.get(run_id)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._tasks[run_id]
                self._answered.pop(run_id, None)

    async def _after_answer(self, answered: asyncio.Event,
                            work: Coroutine[Any, Any, None]) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answered.wait(), self.hold_s)
        finally:  # cancelled while it waited (shutdown): the work still runs
            await _guarded(work)


async def _guarded(work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except Exception:  # noqa: BLE001 - the lease's audit row lets the next start revoke it
        log.exception("cleanup failed")
