"""The runbook a "Save as runbook" click drafts: the runbook format, one line where a line is
meant, nothing secret."""

from __future__ import annotations

from datetime import date

from graph.memory import Deed, Recollection, worth_remembering
from graph.policy import parse_policy
from graph.runbook_draft import NOTHING, Draft, draft_runbook, render
from graph.task import Alert, Source, Task
from tests.graph.test_cleanup import RecordingSurface, in_process
from tools.runbooks.files import parse_runbook

CANARY = "xoxb-123456789012-123456789012-abcdefghijklmnopqrstuvwx"


def past(**more) -> Recollection:
    values = dict(run_id="r-1a2b3c4d", day=date(2026, 11, 20), channel="C0OPS",
                  trigger="cache-prod Redis memory is at 97%", incident="Q2EVICT",
                  service="cache-prod",
                  findings="Stale session keys filled memory.",
                  deeds=[Deed(summary="Read Redis INFO (memory)", status="ok", tier=0,
                              invocation="INFO memory", command="redis info section=memory"),
                         Deed(summary="Delete 1 Redis key(s): sessions:stale", status="ok",
                              tier=3, check="fixed", invocation="DEL sessions:stale",
                              command="redis del keys='[\"sessions:stale\"]'")],
                  resolution="resolved in PagerDuty by Alice Example on 2026-11-20",
                  state="done")
    return Recollection(**(values | more))


def test_the_draft_is_a_runbook_the_loader_reads():
    draft = render(past())
    meta, body = parse_runbook(draft.text)
    assert meta.title == "cache-prod Redis memory is at 97%"
    assert meta.services == ["cache-prod"] and "draft" in meta.tags
    assert meta.commands == ["redis info section=memory"]
    assert "## What was done" in body and "sessions:stale: ok, check: fixed" in body
    assert "resolved in PagerDuty by Alice Example" in body
    assert draft.name == "cache-prod-redis-memory-is-at-97-r-1a2b3c4d.md"


def test_the_commands_are_typed_opsbot_commands_not_what_the_target_saw():
    """``commands`` are what a reader types after ``/ops``; a deed recorded before calls kept
    their typed form still lists its invocation."""
    older = Deed(summary="Read Redis INFO (clients)", status="ok", tier=0,
                 invocation="redis info section=clients")
    meta, _ = parse_runbook(render(past(deeds=[*past().deeds, older])).text)
    assert meta.commands == ["redis info section=memory", "redis info section=clients"]


def test_untrusted_trigger_text_cannot_break_out_of_the_front_matter_or_its_line():
    hostile = "boom\n---\ntitle: owned\ncommands: [redis flushdb]\n# Fake heading"
    meta, body = parse_runbook(render(past(trigger=hostile, deeds=[])).text)
    assert meta.title.startswith("boom --- title: owned") and meta.commands == []
    assert "\n# Fake heading" not in body


def test_secrets_in_findings_are_redacted():
    draft = render(past(findings=f"The bot token {CANARY} was in the config."))
    assert CANARY not in draft.text and "redacted" in draft.text


def task(source: Source = Source.SLASH, alert: Alert | None = None) -> Task:
    return Task(source=source, team="T1", channel="C0OPS", user="U0REQ", text="redis …",
                alert=alert)


def deed(tier: int, status: str) -> Deed:
    return Deed(summary="x", status=status, tier=tier)


def test_worth_remembering_an_incident_an_investigation_or_a_change_that_ran():
    incident = Alert(id="Q1", title="Redis memory at 97%")
    assert worth_remembering(task(Source.ALERT, incident), False, [])
    assert worth_remembering(task(), True, [])  # the model gave its word
    for status in ("ok", "no_data", "error"):  # a change that ran, however it went
        assert worth_remembering(task(), False, [deed(2, status)]), status
    assert worth_remembering(task(), False, [deed(0, "ok"), deed(3, "ok")])


def test_not_worth_remembering_reads_changes_that_never_ran_or_a_runbooks_own_pr():
    assert not worth_remembering(task(), False, [])
    assert not worth_remembering(task(), False, [deed(0, "ok"), deed(1, "ok")])
    for status in ("denied", "pending"):
        assert not worth_remembering(task(), False, [deed(4, status)]), status
    assert not worth_remembering(task(Source.RUNBOOK), False, [deed(2, "ok")])


AUTONOMOUS_CHANGES = """\
version: 1
defaults:
  autonomous_max_tier: 3
"""


async def test_a_report_offers_a_draft_exactly_when_one_can_be_drafted(tmp_path):
    """The real graph marks its report draftable with the rule the draft reads the record with:
    a change no one had to approve (it was never remembered before) drafts; a read does not."""
    surface = RecordingSurface()
    async with in_process(tmp_path, surface, policy=parse_policy(AUTONOMOUS_CHANGES)) as (
            manager, records, queue, _):
        for text in ("redis del keys=sessions:stale", "redis info section=memory"):
            await manager.submit(Task(source=Source.SLASH, team="T0", channel="C0",
                                      user="U0REQ", text=text))
            await queue.drain(10)
        change, read = surface.reports
        drafted = await draft_runbook(records, change.run_id)
        refused = await draft_runbook(records, read.run_id)

    assert change.draftable and change.calls[0].tier == 3 and change.calls[0].status == "ok"
    assert isinstance(drafted, Draft) and "sessions:stale" in drafted.text
    assert not read.draftable and refused == NOTHING.format(run_id=read.run_id)
    assert read.calls[0].command == "redis info section=memory"
