"""The approval desk's card in-process (real run manager, driver, graph, SQLite records, policy):
a click that lands while the card is being posted — the card is visible in Slack before its
ts is recorded — still shows on the card, a click that names no card never votes, and a
cancel in that moment ends the run through the resume job it deferred (not aborting it)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from approvals.models import ApprovalRequest
from graph.desk import MISMATCH, Click
from graph.policy import parse_policy
from graph.records.sqlite import SqliteRecords
from graph.runs import RunManager
from graph.surface import RunRef
from graph.task import Source, Task
from tests.fakes.server import wait_until
from tests.graph.test_cleanup import RecordingSurface, in_process

POLICY = """\
version: 1
groups:
  sre: {users: [U0AAA, U0BBB]}
defaults:
  autonomous_max_tier: 2
  approvers: [sre]
  approvals: {4: 2}
"""
CARD_TS = "1700000000.000100"


class ClickWhilePosting(RecordingSurface):
    """Posts the card, and before the desk has recorded its ts, ``U0AAA`` clicks Approve on it."""

    def __init__(self) -> None:
        super().__init__()
        self.desk = None
        self.said: list[str] = []
        self.drawn: list[ApprovalRequest] = []

    async def ask_approval(self, run: RunRef, request: ApprovalRequest) -> str | None:
        self.said.append(await self.desk.click(self.click(request, "U0AAA", CARD_TS)))
        return CARD_TS

    async def update_approval(self, run, request: ApprovalRequest) -> None:
        self.drawn.append(request)

    @staticmethod
    def click(request: ApprovalRequest, user: str, ts: str | None) -> Click:
        return Click(approval_id=request.id, shown_hash=request.action_hash, user=user,
                     groups=frozenset(), approve=True, channel=request.channel, message_ts=ts)


@asynccontextmanager
async def running(tmp_path, surface, workers: int = 1):
    async with in_process(tmp_path, surface, policy=parse_policy(POLICY),
                          workers=workers) as (manager, records, _, _):
        surface.desk = manager.desk
        yield manager, records


async def flush(manager: RunManager, records: SqliteRecords) -> ApprovalRequest:
    run = await manager.submit(Task(source=Source.SLASH, team="T0", channel="C0", user="U0REQ",
                                    text="redis flushdb"))
    requests = await wait_until(
        lambda: _with_card(records, run.run_id), 10, lambda: "no card was recorded")
    return requests[0]


async def _with_card(records, run_id: str) -> list[ApprovalRequest]:
    return [a for a in await records.approvals.for_run(run_id) if a.card_ts]


async def test_a_vote_cast_while_the_card_is_posted_is_drawn_on_it(tmp_path):
    surface = ClickWhilePosting()
    async with running(tmp_path, surface) as (manager, records):
        request = await flush(manager, records)
        await manager.drain(timeout=10)

    assert surface.said == ["approval 1 of 2 recorded."]
    assert [v.user for v in request.votes] == ["U0AAA"]
    drawn = [r for r in surface.drawn if r.card_ts == CARD_TS]
    assert drawn and [v.user for v in drawn[-1].votes] == ["U0AAA"], \
        "the card was never redrawn with the vote cast while it was being posted"
    kinds = [r["kind"] for r in await _story(tmp_path, request.run_id)]
    assert kinds.index("approval.request") < kinds.index("approval.vote")


async def test_a_click_that_names_no_card_is_refused_even_while_the_card_is_posted(tmp_path):
    surface = ClickWhilePosting()
    surface.click = lambda request, user, ts: ClickWhilePosting.click(request, user, None)
    async with running(tmp_path, surface) as (manager, records):
        request = await flush(manager, records)

    assert surface.said == [MISMATCH]
    assert request.votes == [] and request.status.value == "pending"
    assert surface.drawn == []


async def _story(tmp_path, run_id: str) -> list[dict]:
    records = SqliteRecords(tmp_path / "opsbot.sqlite")
    try:
        return await records.audit.story(run_id)
    finally:
        await records.close()


async def test_a_click_on_a_recorded_card_must_name_that_card(tmp_path):
    async def posted(run, request) -> str:
        return CARD_TS

    surface = RecordingSurface()
    surface.ask_approval = posted
    async with running(tmp_path, surface) as (manager, records):
        request = await flush(manager, records)
        elsewhere = await manager.desk.click(ClickWhilePosting.click(request, "U0AAA", "1.2"))
        here = await manager.desk.click(ClickWhilePosting.click(request, "U0AAA", CARD_TS))
        after = await records.approvals.get(request.id)

    assert elsewhere == MISMATCH and "1 of 2" in here
    assert [v.user for v in after.votes] == ["U0AAA"]


class CancelWhilePosting(RecordingSurface):
    """The requester cancels while the card is being posted (the run is still running); the
    cancel's card edit lasts until another worker has picked up the resume job."""

    def __init__(self) -> None:
        super().__init__()
        self.desk = None
        self.manager: RunManager | None = None
        self.queue = None
        self.said: list[str] = []

    async def ask_approval(self, run: RunRef, request: ApprovalRequest) -> str | None:
        self.said.append(await self.manager.cancel(run.run_id, "U0REQ", frozenset()))
        return CARD_TS

    async def update_approval(self, run, request: ApprovalRequest) -> None:
        # the cancel queued the resume job before it edits the card; another worker takes it
        await wait_until(lambda: _taken(self.queue), 5, lambda: "no worker took the resume job")


async def test_a_cancel_while_the_card_is_posted_ends_the_run_through_its_resume(tmp_path):
    surface = CancelWhilePosting()
    async with running(tmp_path, surface, workers=2) as (manager, records):
        surface.manager, surface.queue = manager, manager.queue
        run = await manager.submit(Task(source=Source.SLASH, team="T0", channel="C0",
                                        user="U0REQ", text="redis flushdb"))
        await wait_until(lambda: surface.reports, 10, lambda: f"no report; said {surface.said}")
        await manager.drain(timeout=10)
        row = await records.runs.row(run.run_id)
        story = [r["kind"] for r in await records.audit.story(run.run_id)]

    assert surface.said == [f"Run `{run.run_id}` cancelled: nothing it was waiting to do will run."]
    assert [r.state.value for r in surface.reports] == ["cancelled"]
    assert row.state.value == "cancelled" and "sandbox.exec" not in story


async def _taken(queue) -> bool:
    return await queue.depth() == {}
