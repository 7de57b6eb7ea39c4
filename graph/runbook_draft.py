""""Save as runbook": a runbook drafted from what a run found and did (issue 14 item 6).

The draft is built from the run's record (its row and audit rows, as the memory of past
incidents reads them: :func:`graph.memory.recollect`), never from the Slack message, so a
click on a forged or edited report cannot plant text that the run did not produce. The draft
has the runbook format of ``runbooks/README.md``: YAML front matter (title, services, alerts,
tags with ``draft``, the read-only commands that helped) and sections for the symptoms, what
was found, what was done with its outcome, and how it ended. Everything in it is redacted and
marked as drafted by opsbot, for a person to review before it is ingested.

Usage::

    drafted = await draft_runbook(records, "r-1a2b3c4d")
    if isinstance(drafted, str):
        ...                      # a sentence: why there is nothing to draft
    else:
        path.write_text(drafted.text)
"""

from __future__ import annotations

import re

import yaml
from pydantic import BaseModel

from graph.memory import Deed, Recollection, recollect
from graph.records import Records
from tools.secrets import REDACTOR

TITLE = 80
FINDINGS = 4000
NOTHING = ("Run `{run_id}` has nothing to draft a runbook from: only runs that investigated "
           "(an alert or a question for the model) or changed something are worth one.")
UNKNOWN = "There is no ended run `{run_id}` to draft a runbook from."


class Draft(BaseModel):
    name: str  # the file name: a slug of the title and the run id
    title: str
    text: str


async def draft_runbook(records: Records, run_id: str) -> Draft | str:
    """The draft of ``run_id``'s runbook, or a sentence saying why there is none."""
    past = await recollect(records, run_id)
    if past is not None:
        return render(past)
    row = await records.runs.row(run_id)  # only to say which sentence applies
    return (NOTHING if row is not None and row.state.final else UNKNOWN).format(run_id=run_id)


def render(past: Recollection) -> Draft:
    title = _one_line(past.trigger)[:TITLE] or f"What run {past.run_id} did"
    front = {"title": title, "services": [past.service] if past.service else [],
             "alerts": [_one_line(past.trigger)[:200]] if past.incident else [],
             "tags": ["draft", "from-run"], "commands": helpful_reads(past.deeds)}
    done = [_deed_line(d) for d in past.deeds] or ["- nothing was run"]
    body = [
        f"# {title}", "",
        f"_Drafted by opsbot from run `{past.run_id}` on {past.day.isoformat()} in "
        f"<#{past.channel}>. Review and edit before you ingest it._", "",
        "## Symptoms", "", _one_line(past.trigger), "",
        "## What was found", "", past.findings[:FINDINGS].strip() or "_The run wrote no findings._",
        "", "## What was done", "", *done, "",
        "## How it ended", "", past.resolution or f"The run ended {past.state}; fixed by: "
        f"{past.fixed_by}.", "",
    ]
    text = "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n"
    text = REDACTOR.redact(text + "\n".join(body))
    return Draft(name=f"{_slug(title)}-{past.run_id}.md", title=title, text=text)


def helpful_reads(deeds: list[Deed]) -> list[str]:
    """The read-only calls that ran fine, as typed commands (the runbook's ``commands``)."""
    commands = (_one_line(d.command or d.invocation) for d in deeds
                if d.status == "ok" and d.tier <= 1)
    return list(dict.fromkeys(c for c in commands if c))


def _deed_line(deed: Deed) -> str:
    check = f", check: {deed.check}" if deed.check else ""
    note = f" ({_one_line(deed.note)})" if deed.note else ""
    return f"- {_one_line(deed.summary)}: {deed.status}{check}{note}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "runbook"
