"""What a schedule is, and reading ``OPSBOT_SCHEDULES`` with line-precise errors.

    schedules:
      - name: cache-memory
        cron: "*/15 * * * *"        # five fields (minute resolution); a sixth is seconds
        timezone: Europe/Paris       # the cron's time zone (default UTC)
        channel: C0OPS               # where the run reports
        command: redis info section=memory    # a typed command, or `question:` for the agent
        identity: U0123ABCD          # the Slack user the run is requested as (policy applies)
        post: on_change              # always (default) | on_change | on_failure

The file is read like the policy (:func:`graph.policy.load.read_model`): every problem is one
``file:line: path: sentence``, all of them at once. Typed commands are parsed against the
catalog when one is given (the CLI's connectors, or the running bot's), so a typo fails at
boot rather than at 3 a.m.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from graph import commands
from graph.policy.load import YamlFileError, read_model
from graph.task import Post
from tools.catalog import Call, CallError, Catalog

SHAPE = "the schedules file must be a mapping with a `schedules:` list"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_USER = re.compile(r"^[UW][A-Z0-9]{2,20}$")
_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,20}$")


class ScheduleError(YamlFileError):
    """The schedules file is invalid."""


class Schedule(BaseModel):
    """One schedule: when, where, what, as whom, and when to speak."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    cron: str
    timezone: str = "UTC"
    channel: str
    command: str | None = None
    question: str | None = None
    identity: str
    post: Post = Post.ALWAYS

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"`{v}` is not a schedule name: use lower-case letters, digits, "
                             "`-`, `_` or `.` (at most 63)")
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        fields = v.split()
        if len(fields) not in (5, 6) or not croniter.is_valid(v):
            raise ValueError(f"`{v}` is not a cron expression: write five fields (minute hour "
                             "day-of-month month day-of-week), or six with seconds last")
        return " ".join(fields)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"`{v}` is not a time zone; write an IANA name such as UTC or "
                             "Europe/Paris") from None
        return v

    @field_validator("identity")
    @classmethod
    def _identity(cls, v: str) -> str:
        if not _USER.match(v):
            raise ValueError(f"`{v}` is not a Slack user id (like U0123ABCD)")
        return v

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str) -> str:
        if not _CHANNEL.match(v):
            raise ValueError(f"`{v}` is not a Slack channel id (like C0123ABCD)")
        return v

    @model_validator(mode="after")
    def _one_request(self) -> Schedule:
        if (self.command is None) == (self.question is None):
            raise ValueError("give exactly one of `command` (a typed command) or `question` "
                             "(for the agent)")
        if not (self.command or self.question or "").strip():
            raise ValueError("the command or question is empty")
        return self

    @property
    def text(self) -> str:
        return self.command or self.question or ""

    @property
    def seconds(self) -> bool:
        """A sixth cron field: the schedule needs second resolution."""
        return len(self.cron.split()) == 6

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def previous(self, now: datetime) -> datetime:
        """The latest fire time at or before ``now`` (UTC)."""
        local = now.astimezone(self.zone) + timedelta(microseconds=1)  # get_prev excludes its start
        return croniter(self.cron, local).get_prev(datetime).astimezone(UTC)

    def next(self, now: datetime) -> datetime:
        """The first fire time after ``now`` (UTC)."""
        return croniter(self.cron, now.astimezone(self.zone)).get_next(datetime).astimezone(UTC)

    def describe(self) -> str:
        zone = "" if self.timezone == "UTC" else f" ({self.timezone})"
        return f"`{self.cron}`{zone}"


class ScheduleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedules: list[Schedule] = Field(default_factory=list)


def parse_schedules(text: str, source: str = "schedules.yml",
                    catalog: Catalog | None = None) -> list[Schedule]:
    """The schedules in ``text``; raises :class:`ScheduleError` with every problem's line.
    With ``catalog``, each typed command must parse to one action of it."""
    spec, marks = read_model(text, source, ScheduleFile, ScheduleError, SHAPE)
    issues = list(marks.issues)
    seen: dict[str, int] = {}
    for index, schedule in enumerate(spec.schedules):
        at = ("schedules", index, "name")
        if schedule.name in seen:
            issues.append(marks.issue(at, f"duplicate schedule name (first on line "
                                          f"{seen[schedule.name]})"))
        seen.setdefault(schedule.name, marks.line(at))
        problem = _command_problem(schedule, catalog)
        if problem:
            issues.append(marks.issue(("schedules", index, "command"), problem))
    if issues:
        raise ScheduleError.from_issues(source, issues)
    return spec.schedules


def load_schedules(path: str | Path | None, catalog: Catalog | None = None) -> list[Schedule]:
    """The schedules at ``path`` (``OPSBOT_SCHEDULES``); none when ``path`` is None."""
    if path is None:
        return []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ScheduleError(f"{path}: cannot read the schedules file: {reason}") from None
    return parse_schedules(text, str(path), catalog)


def _command_problem(schedule: Schedule, catalog: Catalog | None) -> str:
    if schedule.command is None or catalog is None:
        return ""
    try:
        parsed: Any = commands.parse(schedule.command, catalog)
    except commands.ParseError as e:
        return str(e)
    if not isinstance(parsed, commands.RunAction):
        return (f"`{schedule.command}` is not a typed command (`<toolset> <action> ...`); "
                "write it as `question:` to ask the agent")
    try:
        catalog.resolve(Call(id="schedule", toolset=parsed.toolset, action=parsed.action,
                             params=parsed.params))
    except CallError as e:
        return str(e)
    return ""


