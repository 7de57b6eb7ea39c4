"""What the Slack listeners and HTTP handlers need, built once by ``bot/wiring.py``."""

from __future__ import annotations

from dataclasses import dataclass

from bot.directory import Directory
from bot.settings import Settings
from graph.policy import Policy
from graph.runs import RunManager
from graph.store import Dedupe, RunStore
from graph.task import Task
from tools.catalog import Catalog


@dataclass
class BotDeps:
    settings: Settings
    catalog: Catalog
    policy: Policy
    runs: RunManager
    run_store: RunStore
    directory: Directory
    dedupe: Dedupe

    async def submit(self, task: Task):
        """Fill in what policy needs to know about the requester and channel, then queue."""
        groups = await self.directory.groups_of(task.user)
        name = task.channel_name or await self.directory.channel_name(task.channel)
        return await self.runs.submit(
            task.model_copy(update={"user_groups": groups, "channel_name": name})
        )
