"""The one shape every request takes once it is past ingress.

Slack slash commands, mentions, thread follow-ups, PagerDuty alerts, schedules' ticks, task API
requests and console lines all become a :class:`Task`. The graph sees only this model (never a
Slack payload).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Source(StrEnum):
    SLASH = "slash"
    MENTION = "mention"
    THREAD = "thread"
    ALERT = "alert"
    CONSOLE = "console"
    MCP = "mcp"  # an MCP client calling opsbot's catalog (bot/mcp_server.py)
    WEBHOOK = "webhook"  # a review a webhook asks for (GitHub pull requests: bot/github_runs.py)
    ASSISTANT = "assistant"  # a question in a Slack assistant thread (bot/listeners/assistant.py)
    SHORTCUT = "shortcut"  # "Investigate this message" on a Slack message (bot/listeners/shortcuts.py)
    SCHEDULE = "schedule"  # a schedule's tick (graph/schedules/)
    RUNBOOK = "runbook"  # "Save as runbook" as a draft PR (bot/listeners/runbook_drafts.py)
    API = "api"  # the task API, /api/v1 (bot/api/)


class Post(StrEnum):
    """When a scheduled run shows itself in Slack."""

    ALWAYS = "always"
    ON_CHANGE = "on_change"  # only when its result differs from the previous run's
    ON_FAILURE = "on_failure"  # only when it failed, was denied or was refused


class Fired(BaseModel):
    """Which schedule and tick a run was started by."""

    model_config = ConfigDict(frozen=True)

    name: str
    tick: datetime
    post: Post = Post.ALWAYS


class Alert(BaseModel):
    """An incident as its source describes it: PagerDuty (webhook or Slack post),
    Alertmanager (an alert group), GitHub (a failed check on a default branch).

    Every field is untrusted text: shown to the model as quoted data, never as instructions."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    origin: str = "PagerDuty"  # who raised it, as people call it
    request: str = ""  # what opsbot is asked to do with it (opsbot's words; default: investigate)
    details: dict[str, Any] = Field(default_factory=dict)  # shown to the model (labels, …)
    service: str = ""
    urgency: str = ""
    status: str = "triggered"
    link: str = ""
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)


class Quote(BaseModel):
    """A message a run is about (a message shortcut): untrusted text, never a command."""

    model_config = ConfigDict(frozen=True)

    author: str = ""  # Slack user or bot id; empty when unknown
    text: str = ""


class Task(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: Source
    team: str
    channel: str
    channel_name: str = ""
    is_dm: bool = False
    user: str
    user_groups: frozenset[str] = frozenset()
    text: str = ""
    thread_ts: str | None = None  # the Slack thread the run lives in (None: start one)
    message_ts: str | None = None  # the triggering message, for reactions
    alert: Alert | None = None
    quote: Quote | None = None  # the message to investigate (untrusted context, never parsed)
    # one exact call (toolset, action, params as JSON) instead of text to parse: MCP clients
    call: dict[str, Any] | None = None
    schedule: Fired | None = None  # a scheduled run: its schedule and tick
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def thread_id(self, thread_ts: str | None = None) -> str:
        """One LangGraph thread per Slack thread: ``team:channel:thread_ts``."""
        return f"{self.team}:{self.channel}:{thread_ts or self.thread_ts}"


RUN_ID = r"^r-[0-9a-f]{8}$"  # what new_run_id makes: untrusted text naming a run must match


def new_run_id() -> str:
    return "r-" + secrets.token_hex(4)


def is_run_id(text: str) -> bool:
    return re.fullmatch(RUN_ID, text) is not None
