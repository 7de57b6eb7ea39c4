"""The policy's limits on starting runs, checked where a run is submitted (``graph/runs.py``).

A person (or their MCP token) may start at most ``runs_per_user`` runs, and a channel at most
``runs_per_channel``, in any window of that length; a run that would ask the LLM may not start
once its channel has spent ``llm_per_channel_per_day`` since midnight UTC (a run that reaches
that budget while it runs stops before its next model call, ``graph/agent.py``). A refusal is a
sentence from :mod:`graph.policy.limits`. The counts are read inside the submit's transaction,
locked per requester and per channel, so a burst of requests can't all pass one count.

Alert runs are never refused here: an incident is always investigated (its model calls still
stop at the channel's budget). They count towards their channel's runs like any other.

Usage::

    quota = Quota(policy.limits, "gpt-4o-mini", lambda task: asks_llm(task, catalog))
    async with records.transaction() as tx:
        refusal = await quota.refusal(tx, task, now)   # a sentence, or None
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from graph import commands
from graph.policy.limits import PolicyLimits
from graph.records import Records
from graph.task import Source, Task
from tools.catalog import Catalog


@dataclass(frozen=True)
class Quota:
    limits: PolicyLimits = field(default_factory=PolicyLimits)
    model: str = ""
    asks_llm: Callable[[Task], bool] = lambda task: False  # would a run of it call the LLM?

    async def refusal(self, records: Records, task: Task, now: datetime) -> str | None:
        """Why ``task`` may not start a run now, or None."""
        if task.source is Source.ALERT:
            return None
        return await self._rates(records, task, now) or await self._budget(records, task, now)

    async def _rates(self, records: Records, task: Task, now: datetime) -> str | None:
        by_user, by_channel = self.limits.runs_per_user, self.limits.runs_per_channel
        if by_user is None and by_channel is None:
            return None
        runs = records.runs  # the requester's lock first, then the channel's: always this order
        user_runs = await runs.count_started(
            now - timedelta(seconds=by_user.window_s), requester=task.user,
            lock=True) if by_user else 0
        channel_runs = await runs.count_started(
            now - timedelta(seconds=by_channel.window_s), channel=task.channel,
            lock=True) if by_channel else 0
        return self.limits.run_refusal(user_runs=user_runs, channel_runs=channel_runs,
                                       user=task.user, channel_shown=shown(task))

    async def _budget(self, records: Records, task: Task, now: datetime) -> str | None:
        if self.limits.llm_per_channel_per_day is None or not self.asks_llm(task):
            return None
        spent = await records.audit.llm_spend(task.channel, midnight(now))
        return self.limits.llm_refusal(spent, self.model, shown(task))


def asks_llm(task: Task, catalog: Catalog) -> bool:
    """Whether a run of ``task`` would call the LLM, as the graph's ``understand`` node decides:
    an alert or free text does; a typed command, an exact MCP call or a parse error doesn't."""
    if task.alert is not None:
        return True
    if task.call is not None:
        return False
    try:
        return isinstance(commands.parse(task.text, catalog), commands.FreeText)
    except commands.ParseError:
        return False


def midnight(now: datetime) -> datetime:
    """The start of ``now``'s day in UTC: daily budgets count from there."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def shown(task: Task) -> str:
    """The channel as a sentence names it: ``#name`` when known, else Slack's mention."""
    return f"#{task.channel_name}" if task.channel_name else f"<#{task.channel}>"
