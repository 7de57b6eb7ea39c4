"""The approval status machine in both storage modes (a real SQLite file, a real PostgreSQL),
including racing writers on separate connections."""

import asyncio
from datetime import timedelta

import pytest

from approvals.models import ApprovalStatus
from approvals.rules import ApproverRule
from graph.records.sqlite import SqliteRecords
from tests.approvals.test_cards import NOW, request
from tests.services.records import open_pg

ONE_OF_TWO = ApproverRule(users=("UA", "UB"), groups=("SSRE",), required=1,
                          requester_may_approve=False)


@pytest.fixture
async def store(records):
    await records.approvals.create(request(rule=ONE_OF_TWO))
    return records.approvals


async def test_create_is_idempotent(store):
    again = await store.create(request(summary="different"))
    assert again.summary == "Delete every key in the Redis database 0"


async def test_authorised_approval_decides_once(store):
    first = await store.vote("a-123", "UA", frozenset(), True, NOW)
    assert (first.accepted, first.decided, first.message) == (True, True, "approved.")
    second = await store.vote("a-123", "UB", frozenset(), True, NOW)
    assert (second.accepted, second.decided) == (False, False)
    assert second.message == "this was already approved by <@UA>."
    assert (await store.get("a-123")).status is ApprovalStatus.APPROVED


@pytest.mark.parametrize(
    "user,groups,message",
    [
        ("UX", frozenset(), "you can't approve this: you are not one of its approvers"),
        ("UREQ", frozenset({"SSRE"}), "you can't approve this: you requested this action"),
    ],
)
async def test_unauthorised_clicks_change_nothing(store, user, groups, message):
    outcome = await store.vote("a-123", user, groups, True, NOW)
    assert not outcome.accepted and outcome.message.startswith(message)
    stored = await store.get("a-123")
    assert stored.status is ApprovalStatus.PENDING and stored.version == 0


async def test_group_member_may_approve(store):
    assert (await store.vote("a-123", "UG", frozenset({"SSRE"}), True, NOW)).decided


async def test_requester_may_withdraw_by_denying(store):
    outcome = await store.vote("a-123", "UREQ", frozenset(), False, NOW, reason="wrong db")
    assert outcome.decided and (await store.get("a-123")).denial_reason == "wrong db"


async def test_two_person_rule_needs_distinct_approvers(records):
    store = records.approvals
    await store.create(request(rule=ApproverRule(users=("UA", "UB"), required=2)))
    one = await store.vote("a-123", "UA", frozenset(), True, NOW)
    assert one.accepted and not one.decided and one.message == "approval 1 of 2 recorded."
    twice = await store.vote("a-123", "UA", frozenset(), True, NOW)
    assert not twice.accepted and "already approved it" in twice.message
    two = await store.vote("a-123", "UB", frozenset(), True, NOW)
    assert two.decided and (await store.get("a-123")).deciders == ["UA", "UB"]


async def test_click_after_expiry_expires_and_does_not_approve(store):
    late = await store.vote("a-123", "UA", frozenset(), True, NOW + timedelta(hours=1))
    assert late.decided and not late.accepted and late.message == "this approval request has expired."
    assert (await store.get("a-123")).status is ApprovalStatus.EXPIRED


async def test_close_only_moves_pending_requests(store):
    closed = await store.close("a-123", ApprovalStatus.CANCELLED, NOW)
    assert closed.status is ApprovalStatus.CANCELLED
    assert await store.close("a-123", ApprovalStatus.EXPIRED, NOW) is None
    assert (await store.vote("a-123", "UA", frozenset(), True, NOW)).message == (
        "this approval request is already cancelled.")


async def _eight_clickers(open_records, store):
    """Eight writers, each with its own connection (as separate processes would be), each
    voting inside its own transaction, all at once."""
    mine = [await open_records() for _ in range(8)]
    start = asyncio.Event()

    async def click(records, user):
        await start.wait()
        async with records.transaction() as tx:
            return await tx.approvals.vote("a-123", user, frozenset({"SSRE"}), True, NOW)

    tasks = [asyncio.create_task(click(r, f"U{i}")) for i, r in enumerate(mine)]
    start.set()
    outcomes = await asyncio.gather(*tasks)
    for records in mine:
        await records.close()
    winners = [o for o in outcomes if o.decided]
    assert len(winners) == 1
    final = await store.get("a-123")
    assert final.status is ApprovalStatus.APPROVED and len(final.votes) == 1
    losers = [o.message for o in outcomes if not o.decided]
    assert all(m == f"this was already approved by <@{final.votes[0].user}>." for m in losers)


async def test_racing_clicks_decide_exactly_once_sqlite(tmp_path):
    path = tmp_path / "opsbot.sqlite"
    records = SqliteRecords(path)
    await records.approvals.create(request(rule=ONE_OF_TWO))

    async def other():
        return SqliteRecords(path)

    await _eight_clickers(other, records.approvals)
    await records.close()


async def test_racing_clicks_decide_exactly_once_postgres(postgres_database):
    records = await open_pg(postgres_database)
    await records.approvals.create(request(rule=ONE_OF_TWO))
    await _eight_clickers(lambda: open_pg(postgres_database), records.approvals)
    await records.close()
