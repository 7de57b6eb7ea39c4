""""Save as runbook" on a run's report: the run's draft runbook (issue 14 item 6).

The handler acks first. The button's value names the run; it is untrusted, so the draft is
built from that run's own record (:func:`graph.runbook_draft.draft_runbook`). Then:

* with ``OPSBOT_RUNBOOK_REPO`` (the team's runbooks repository), it is proposed there as a
  draft PR: a run in the report's thread, whose one exact call is the GitHub connector's
  ``draft_pr`` (tier 2) on branch ``opsbot/runbook-<run>``, under policy like any call, with
  the clicker as its requester; a second click updates that PR;
* otherwise (the embedded mode) it is written under ``OPSBOT_RUNBOOK_DRAFTS``
  (``runbooks/drafts`` by default: ingested with the rest of ``runbooks/`` once a person has
  reviewed it); a second click writes the same file again.

Either way a ``runbook.drafted`` audit row records it and the clicker is told where it went.
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
from graph.surface import RunRef
from graph.task import Source, Task, is_run_id


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
    if deps.settings.runbook_repo:
        await tell(client, body, await _propose(deps, run_id, user, drafted))
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


async def _propose(deps: BotDeps, run_id: str, user: str, draft: Draft) -> str:
    """Start the run that opens (or updates) the draft's PR; the sentence for the clicker."""
    repo = deps.settings.runbook_repo
    if "github" not in deps.catalog.configs:
        return messages.RUNBOOK_NO_GITHUB.format(repo=repo)
    row = await deps.records.runs.row(run_id)
    assert row is not None, "a run with a draft has a row"
    path = f"{deps.settings.runbook_repo_dir}/{draft.name}"
    call = {"toolset": "github", "action": "draft_pr", "params": {
        "repo": repo, "branch": f"opsbot/runbook-{run_id}", "title": f"Runbook: {draft.title}",
        "body": messages.RUNBOOK_PR_BODY.format(run_id=run_id, path=path),
        "files": {path: draft.text}}}
    origin = row.run.task
    task = Task(source=Source.RUNBOOK, team=origin.team, channel=origin.channel, user=user,
                thread_ts=row.run.thread_ts, text=f"save run {run_id} as a runbook", call=call)
    pr_run = await deps.submit(task)
    if not isinstance(pr_run, RunRef):  # refused by the policy's limits: they were told why
        return messages.RUNBOOK_NOT_PROPOSED.format(run_id=run_id)
    await deps.records.audit.record("runbook.drafted", run_id, user, repo=repo, path=path,
                                    title=draft.title, pr_run=pr_run.run_id)
    return messages.RUNBOOK_PROPOSING.format(run_id=run_id, repo=repo, pr_run=pr_run.run_id)


def write(directory: Path, draft: Draft) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / draft.name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(draft.text, encoding="utf-8")
    tmp.replace(path)
    return path
