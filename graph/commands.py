"""The typed command language: what ``/ops <text>`` means without an LLM.

Grammar (words split like a shell, so quotes work)::

    help [toolset]                         what opsbot can do
    runs                                   active runs in this channel
    schedules                              the schedules, their last result and next run
    cancel <run-id>                        cancel a run and expire its approvals
    <toolset> <action> [value ...] [key=value ...]
                                           run one action; bare values fill the action's
                                           required parameters in order
    anything else                          free text: a question for the LLM

Text that *looks* like a command but names an unknown toolset or action is an error with a
suggestion, not a question: ``rdis info`` → "Unknown toolset `rdis`. Did you mean `redis`?"
"""

from __future__ import annotations

import difflib
import html
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from tools.catalog import CallError, Catalog, parse_params
from graph.task import Task

MAX_TEXT = 4000
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|[^>]*)?>")
_MENTION = re.compile(r"<[@#!][^>]*>")
_KEY = re.compile(r"^[a-z_][a-z0-9_]*$")  # key=value, as opposed to prose with an "="
KEYWORDS = ("help", "runs", "schedules", "cancel")
_SHELL_SPECIAL = frozenset("'\"\\")  # what makes shlex do more than split on blanks
_BLANKS = re.compile(r"[ \t\r\n]+")  # shlex's whitespace


class ParseError(ValueError):
    """Input that cannot be a command; ``str(e)`` is the sentence the user sees."""


@dataclass(frozen=True)
class Help:
    toolset: str | None = None


@dataclass(frozen=True)
class ListRuns:
    pass


@dataclass(frozen=True)
class ListSchedules:
    pass


@dataclass(frozen=True)
class Cancel:
    run_id: str


@dataclass(frozen=True)
class RunAction:
    toolset: str
    action: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        args = " ".join(f"{k}={_show(v)}" for k, v in self.params.items())
        return f"{self.toolset} {self.action}" + (f" {args}" if args else "")


@dataclass(frozen=True)
class FreeText:
    text: str


Command = Help | ListRuns | ListSchedules | Cancel | RunAction | FreeText


def words_of(text: str) -> list[str]:
    """``shlex.split(text)``; text without quotes or backslashes (nearly every command) is
    split on shlex's blanks directly, as shlex would, at a tenth of its cost on the ack path."""
    if _SHELL_SPECIAL.isdisjoint(text):
        return [word for word in _BLANKS.split(text) if word]
    return shlex.split(text)


def clean(text: str) -> str:
    """Undo Slack's markup: unwrap links, drop mentions, unescape &amp; &lt; &gt;."""
    text = _MENTION.sub(" ", _LINK.sub(r"\1", text))
    return html.unescape(text).replace("\u00a0", " ").strip()


def parse(text: str, catalog: Catalog) -> Command:
    if len(text) > MAX_TEXT:
        raise ParseError(f"That is {len(text):,} characters; opsbot reads at most {MAX_TEXT:,}.")
    text = clean(text)
    try:
        words = words_of(text)
    except ValueError as e:
        head = text.split()[0].lower() if text.split() else ""
        if head in catalog.toolsets or head in KEYWORDS:
            message = f"I couldn't split that into words ({e}); check your quotes."
            raise ParseError(message) from None
        return FreeText(text)  # prose with an apostrophe, not a command
    if not words:
        return Help()
    head, rest = words[0].lower(), words[1:]
    if head == "help":
        return Help(rest[0].lower() if rest else None)
    if head == "runs" and not rest:
        return ListRuns()
    if head == "schedules" and not rest:
        return ListSchedules()
    if head == "cancel":
        if len(rest) != 1:
            raise ParseError("Usage: `cancel <run-id>` (see `runs` for ids).")
        return Cancel(rest[0])
    if head in catalog.toolsets:
        return _action(head, rest, catalog)
    if _looks_like_command(head, rest, catalog):
        close = difflib.get_close_matches(head, [*catalog.toolsets, *KEYWORDS], n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise ParseError(f"Unknown command `{head}`.{hint} Try `help`.")
    return FreeText(text)


def _looks_like_command(head: str, rest: list[str], catalog: Catalog) -> bool:
    if any("=" in w and _KEY.match(w.split("=", 1)[0]) for w in rest):
        return True
    return bool(difflib.get_close_matches(head, [*catalog.toolsets, *KEYWORDS], n=1, cutoff=0.75))


def _action(toolset_name: str, words: list[str], catalog: Catalog) -> RunAction:
    try:
        toolset = catalog.toolset(toolset_name)
    except CallError as e:
        raise ParseError(str(e)) from None
    if not words:
        names = ", ".join(f"`{a.name}`" for a in toolset.actions)
        raise ParseError(f"Which `{toolset.name}` action? One of: {names}.")
    name, args = words[0].lower(), words[1:]
    action = toolset.action(name)
    if action is None:
        names = [a.name for a in toolset.actions]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise ParseError(
            f"`{toolset.name}` has no action `{name}`.{hint} "
            f"Available: {', '.join(f'`{n}`' for n in names)}."
        )
    try:
        params = parse_params(action.params, args, f"{toolset.name} {action.name}")
    except CallError as e:
        raise ParseError(str(e)) from None
    return RunAction(toolset.name, action.name, params)


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return shlex.quote(text)


def answered_by_model(task: Task, catalog: Catalog) -> bool:
    """Whether a task's run is the agent's (an alert, or words that are not a typed command):
    its answer is written by the model, so it can be streamed as it is written."""
    if task.alert is not None:
        return True
    if task.call is not None:
        return False
    try:
        return isinstance(parse(task.text, catalog), FreeText)
    except ParseError:
        return False
