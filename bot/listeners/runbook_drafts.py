""""Save as runbook" on a run's report: the run's draft runbook as a file (issue 14 item 6).

The handler acks first. The button's value names the run; it is untrusted, so the draft is
built from that run's own record (:func:`graph.runbook_draft.draft_runbook`), written under
``OPSBOT_RUNBOOK_DRAFTS`` (``runbooks/drafts`` by default: ingested with the rest of
``runbooks/`` once a person has reviewed it), recorded as a ``runbook.drafted`` audit row, and
the clicker is told where it is. A second click on the same report writes the same file again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from slack_bolt.async_app import AsyncApp

from bot import messages
from bot.blocks import SAVE_RUNBOOK_ACTION
from bot.deps import BotDeps
from bot.listeners.actions import tell
from graph.runbook_draft import Draft, draft_runbook
from graph.task import is_run_id


def register(app: AsyncApp, deps: BotDeps) -> None:
    @app.action(SAVE_RUNBOOK_ACTION)
    async def save(ack, body, client) -> None:
        await ack()
        deps.spawn(_save(deps, body, client))


async def _save(deps: BotDeps, body: dict, client) -> None:
    run_id = str(((body.get("actions") or [{}])[0]).get("value") or "")
    user = (body.get("user") or {}).get("id") or ""
    if not is_run_id(run_id) or not user:
        await tell(client, body, messages.BAD_BUTTON)
        return
    drafted = await draft_runbook(deps.records, run_id)
    if isinstance(drafted, str):
        await tell(client, body, drafted)
        return
    try:
        path = await asyncio.to_thread(write, deps.settings.runbook_drafts, drafted)
    except OSError as e:
        await tell(client, body, messages.RUNBOOK_NOT_WRITTEN.format(
            directory=deps.settings.runbook_drafts, error=e.strerror or e))
        return
    await deps.records.audit.record("runbook.drafted", run_id, user, path=str(path),
                                    title=drafted.title)
    await tell(client, body, messages.RUNBOOK_DRAFTED.format(path=path, run_id=run_id))


def write(directory: Path, draft: Draft) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / draft.name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(draft.text, encoding="utf-8")
    tmp.replace(path)
    return path
