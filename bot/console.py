"""``opsbot chat``: the whole bot in a terminal, no Slack workspace needed.

The same graph, policy, sandbox and audit as in Slack; the surface prints to the terminal and
approval cards become a prompt. The person at the keyboard is the requester (``UCONSOLE``) and,
when they answer the prompt, the approver (``UCONSOLEAPPROVER``); with no ``OPSBOT_POLICY`` the
console policy names that identity as the approver of gated actions.
"""

from __future__ import annotations

import asyncio
import re
import sys
from typing import TextIO

from approvals.models import ApprovalRequest
from approvals.mrkdwn import json_text
from bot import messages
from bot.blocks import report_text
from graph import commands
from graph.desk import Click
from graph.runs import RunManager
from graph.surface import Checklist, Report, RunRef
from graph.task import Source, Task
from tools.catalog import Catalog
from tools.secrets import REDACTOR

REQUESTER = "UCONSOLE"  # the person at the keyboard, asking
APPROVER = "UCONSOLEAPPROVER"  # the same person, answering an approval prompt
CHANNEL = "console"
CONSOLE_CARD = "console-card"  # where an approval prompt "is": every card has a place a click names
_MARKUP = re.compile(r"<@([^>|]+)(?:\|[^>]*)?>|<!date\^\d+\^[^|]*\|([^>]*)>")


_EMOJI = {":white_check_mark:": "✅", ":x:": "❌", ":warning:": "⚠️",
          ":heavy_multiplication_x:": "✖️", ":hourglass:": "⌛", ":no_entry:": "⛔"}
_BOLD = re.compile(r"(?<![\w*])\*(\S[^*\n]*?)\*(?![\w*])")


def plain(text: str) -> str:
    """Slack mrkdwn → terminal text: mentions, dates, emoji codes, bold and code fences."""
    text = _MARKUP.sub(lambda m: m.group(1) or m.group(2) or "", text)
    for code, emoji in _EMOJI.items():
        text = text.replace(code, emoji)
    text = _BOLD.sub(r"\1", text.replace("```", "\n"))
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class ConsoleSurface:
    def __init__(self, out: TextIO = sys.stdout):
        self.out = out
        self.pending: asyncio.Queue[ApprovalRequest] = asyncio.Queue()
        self._shown: dict[str, list[str]] = {}

    def write(self, text: str, markup: bool = True) -> None:
        """One line (or more) to the terminal; ``markup=False`` for exact text such as params."""
        self.out.write(REDACTOR.redact(plain(text) if markup else text) + "\n")
        self.out.flush()

    async def open_run(self, run: RunRef, checklist: Checklist) -> RunRef:
        self.write(f"▶ run {run.run_id}: {run.task.text}")
        return run.model_copy(update={"thread_ts": run.thread_ts or run.run_id})

    async def answer(self, run: RunRef, reply_id: str, text: str, tools: bool = False) -> None:
        return None  # the terminal shows the whole answer with the report

    async def progress(self, run: RunRef, checklist: Checklist, final: bool = False) -> None:
        lines = [s.line() for s in checklist.steps]
        seen = self._shown.setdefault(run.run_id, [])
        for line in lines:
            if line not in seen:
                self.write(f"  {line}")
                seen.append(line)

    async def ask_approval(self, run: RunRef, request: ApprovalRequest) -> str | None:
        self.write(f"  ✋ approval needed: {request.summary} on {request.target} "
                   f"(tier {request.tier}; {request.reason})")
        params = json_text(request.canonical.get("params", {})).replace("\n", "\n    ")
        self.write(f"  the complete parameters:\n    {params}", markup=False)
        if request.preview:
            self.write("  preview:\n    " + request.preview.replace("\n", "\n    "))
        await self.pending.put(request)
        return CONSOLE_CARD

    async def update_approval(self, run: RunRef, request: ApprovalRequest) -> None:
        self.write(f"  approval {request.id}: {request.status.value}")

    async def report(self, run: RunRef, report: Report) -> None:
        self.write(report_text(report))
        self._shown.pop(run.run_id, None)

    async def say(self, run: RunRef, text: str) -> None:
        self.write(text)

    async def refused(self, task: Task, text: str) -> None:
        self.write(f"⛔ {text}")


async def repl(manager: RunManager, surface: ConsoleSurface, catalog: Catalog,
               stdin: TextIO = sys.stdin) -> None:
    """Read commands until EOF; after each, answer any approval prompts it raised."""
    surface.write("opsbot chat — type `help`, a command like `redis info`, or a question. Ctrl-D quits.")
    while True:
        line = await asyncio.to_thread(_prompt, "ops> ", stdin)
        if line is None:
            return
        if not line.strip():
            continue
        if await _answered_here(line, manager, surface, catalog, stdin):
            continue
        await manager.submit(Task(source=Source.CONSOLE, team="local", channel=CHANNEL,
                                  user=REQUESTER, text=line.strip()))
        await _settle(manager, surface, stdin)


async def _answered_here(line: str, manager: RunManager, surface: ConsoleSurface,
                         catalog: Catalog, stdin: TextIO) -> bool:
    """``runs`` and ``cancel`` are answered at once, as Slack answers them in an ephemeral."""
    try:
        command = commands.parse(line, catalog)
    except commands.ParseError:
        return False  # the run reports the error, as in Slack
    if isinstance(command, commands.ListRuns):
        surface.write(messages.runs_list(await manager.active(CHANNEL)))
    elif isinstance(command, commands.Cancel):
        surface.write(await manager.cancel(command.run_id, REQUESTER, frozenset()))
        await _settle(manager, surface, stdin)
    else:
        return False
    return True


async def _settle(manager: RunManager, surface: ConsoleSurface, stdin: TextIO) -> None:
    while True:
        await manager.drain(timeout=3600)
        if surface.pending.empty():
            return
        while not surface.pending.empty():
            request = surface.pending.get_nowait()
            answer = await asyncio.to_thread(_prompt, f"Approve `{request.summary}`? [y/N] ", stdin)
            approve = (answer or "").strip().lower() in ("y", "yes")
            click = Click(approval_id=request.id, shown_hash=request.action_hash, user=APPROVER,
                          groups=frozenset(), approve=approve, channel=CHANNEL, message_ts=CONSOLE_CARD,
                          reason="" if approve else "denied at the console")
            surface.write(f"  {await manager.desk.click(click)}")


def _prompt(text: str, stdin: TextIO) -> str | None:
    sys.stdout.write(text)
    sys.stdout.flush()
    line = stdin.readline()
    return line.rstrip("\n") if line else None
