"""What the Slack listeners and HTTP handlers need, built once by ``bot/server.py``.

Listeners ack, validate, and hand anything slow (Web API look-ups, queueing a run, recording a
click) to :meth:`BotDeps.spawn`, so Slack's HTTP request is answered in about a millisecond.
Over HTTP, handed-off work starts once the answer is written (:data:`ACKED`): none of its CPU
or database work comes before the ack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from contextvars import ContextVar
from dataclasses import dataclass, field

import structlog

from bot.directory import Directory
from bot.settings import Settings
from graph.policy import Policy
from graph.runs import RunManager
from graph.schedules import Schedule
from graph.records import Records
from graph.task import Task
from tools.catalog import Catalog

log = structlog.get_logger("opsbot.bot")
# set by the HTTP handler while it serves a request: work handed off waits for the answer
ACKED: ContextVar[asyncio.Event | None] = ContextVar("opsbot_acked", default=None)
# in a Bolt context: the acceptor process (bot/acceptor.py) already answered this request, so
# what a listener would say in its ack goes out through the response_url instead
ACKED_ELSEWHERE = "opsbot_acked_elsewhere"


@dataclass
class BotDeps:
    settings: Settings
    catalog: Catalog
    policy: Policy
    runs: RunManager
    records: Records
    directory: Directory
    schedules: tuple[Schedule, ...] = ()  # OPSBOT_SCHEDULES, for `/ops schedules`
    _work: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    def spawn(self, work: Awaitable[object]) -> None:
        """Run ``work`` after the ack; failures are logged, never lost silently."""
        task = asyncio.create_task(self._guarded(work, ACKED.get()))
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    async def drain(self, timeout: float = 10) -> None:
        """Let handed-off work finish (shutdown, tests)."""
        if self._work:
            await asyncio.wait(list(self._work), timeout=timeout)

    @staticmethod
    async def _guarded(work: Awaitable[object], acked: asyncio.Event | None) -> None:
        try:
            if acked is not None:
                await acked.wait()
            await work
        except Exception:  # noqa: BLE001 - logged with its traceback; the listener already acked
            log.exception("handed-off work failed")

    async def submit(self, task: Task, delivery: str | None = None, tell: bool = True):
        """Fill in what policy needs to know about the requester and channel, then record and
        queue the run (``delivery``: a Slack ``event_id`` or webhook id seen only once). A run
        the policy's limits refuse is told to the requester (``tell``) and returned as
        :class:`graph.runs.Refused`."""
        return await self.runs.submit(await described(self.directory, task), delivery, tell=tell)


async def described(directory: Directory, task: Task, team: str = "") -> Task:
    """``task`` with what policy needs to know: the requester's user groups, the channel's
    name (and the workspace, for tasks that did not come from Slack)."""
    groups = await directory.groups_of(task.user)
    name = task.channel_name or await directory.channel_name(task.channel)
    return task.model_copy(update={"user_groups": groups, "channel_name": name,
                                   "team": task.team or team})
