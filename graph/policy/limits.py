"""Rate limits on starting runs and LLM spend budgets: data from the policy's ``limits`` section
plus pure functions that turn counts into a refusal sentence (or None).

The counting itself (runs a user or channel started in the window, a channel's LLM spend
today) is the stores' job; these functions only judge what they are given, so one table of
cases tests them. Usage::

    limits = policy.limits
    refusal = limits.run_refusal(user_runs=20, channel_runs=3, user="U1", channel_shown="#ops")
    if refusal:
        ...  # tell the requester, start nothing
    limits.llm_refusal(spent_today, model, "#ops")   # a channel's budget for today, or None
    limits.run_cap(usage, model)                      # "LLM budget per run ($0.5)" or ""
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from graph.policy.schema import BudgetSpec, LimitsSpec, format_duration
from graph.usage import cost

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Rate(BaseModel):
    """At most ``count`` in any ``window_s``."""

    model_config = _FROZEN

    count: int
    window_s: int

    @property
    def shown(self) -> str:
        return f"{self.count} per {format_duration(self.window_s)}"


class Budget(BaseModel):
    model_config = _FROZEN

    tokens: int | None = None
    usd: float | None = None

    def spent(self, usage: Mapping[str, Any], model: str) -> str | None:
        """Which side of the budget ``usage`` has used up, as words; None while some is left."""
        if self.tokens is not None and usage.get("total_tokens", 0) >= self.tokens:
            return f"{self.tokens:,} tokens"
        usd = cost(model, usage)
        if self.usd is not None and usd is not None and usd >= self.usd:
            return f"${self.usd:g}"
        return None


class PolicyLimits(BaseModel):
    """The compiled ``limits`` section; everything None means no limit."""

    model_config = _FROZEN

    runs_per_user: Rate | None = None
    runs_per_channel: Rate | None = None
    llm_per_run: Budget | None = None
    llm_per_channel_per_day: Budget | None = None

    def run_refusal(self, *, user_runs: int, channel_runs: int, user: str,
                    channel_shown: str) -> str | None:
        """Why a new run may not start, given the runs already started in each window."""
        rate = self.runs_per_user
        if rate is not None and user_runs >= rate.count:
            return (f"<@{user}> has started {_runs(user_runs)} in the last "
                    f"{format_duration(rate.window_s)}; the policy allows {rate.shown} per "
                    "person. Nothing was started; try again later.")
        rate = self.runs_per_channel
        if rate is not None and channel_runs >= rate.count:
            return (f"{channel_shown} has started {_runs(channel_runs)} in the last "
                    f"{format_duration(rate.window_s)}; the policy allows {rate.shown} per "
                    "channel. Nothing was started; try again later.")
        return None

    def llm_refusal(self, spent_today: Mapping[str, Any], model: str,
                    channel_shown: str) -> str | None:
        """Why a run that would ask the LLM may not start: the channel's spend since midnight
        UTC has reached its daily budget."""
        budget = self.llm_per_channel_per_day
        spent = budget.spent(spent_today, model) if budget else None
        if spent is None:
            return None
        return (f"{channel_shown} has used its LLM budget for today ({spent}; the policy's "
                "budget per channel per day, counted from midnight UTC). Nothing was started; "
                "typed commands still work, or ask again after midnight UTC.")

    def run_cap(self, usage: Mapping[str, Any], model: str) -> str:
        """The per-run LLM budget this run's ``usage`` has reached, named for the report."""
        spent = self.llm_per_run.spent(usage, model) if self.llm_per_run else None
        return f"LLM budget per run ({spent})" if spent else ""

    def channel_cap(self, spent_today: Mapping[str, Any], model: str) -> str:
        """The per-channel daily LLM budget ``spent_today`` (the channel's usage since
        midnight UTC, this run included) has reached."""
        budget = self.llm_per_channel_per_day
        spent = budget.spent(spent_today, model) if budget else None
        return f"LLM budget per channel per day ({spent})" if spent else ""


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def compile_limits(spec: LimitsSpec) -> PolicyLimits:
    def rate(value: tuple[int, int] | None) -> Rate | None:
        return Rate(count=value[0], window_s=value[1]) if value else None

    def budget(value: BudgetSpec | None) -> Budget | None:
        return Budget(tokens=value.tokens, usd=value.usd) if value else None

    return PolicyLimits(
        runs_per_user=rate(spec.runs_per_user), runs_per_channel=rate(spec.runs_per_channel),
        llm_per_run=budget(spec.llm_per_run),
        llm_per_channel_per_day=budget(spec.llm_per_channel_per_day),
    )
