"""The approval status machine on a real SQLite file, including racing writers."""

import threading
from datetime import timedelta

import pytest

from approvals.models import ApprovalStatus
from approvals.rules import ApproverRule
from approvals.store import ApprovalStore
from graph.store import open_db
from tests.approvals.test_cards import NOW, request


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "opsbot.sqlite"


@pytest.fixture
def store(db_path):
    store = ApprovalStore(open_db(db_path))
    store.create(request(rule=ApproverRule(users=("UA", "UB"), groups=("SSRE",), required=1,
                                           requester_may_approve=False)))
    return store


def test_create_is_idempotent(store):
    again = store.create(request(summary="different"))
    assert again.summary == "Delete every key in the Redis database 0"


def test_authorised_approval_decides_once(store):
    first = store.vote("a-123", "UA", frozenset(), True, NOW)
    assert (first.accepted, first.decided, first.message) == (True, True, "approved.")
    second = store.vote("a-123", "UB", frozenset(), True, NOW)
    assert (second.accepted, second.decided) == (False, False)
    assert second.message == "this was already approved by <@UA>."
    assert store.get("a-123").status is ApprovalStatus.APPROVED


@pytest.mark.parametrize(
    "user,groups,message",
    [
        ("UX", frozenset(), "you can't approve this: you are not one of its approvers"),
        ("UREQ", frozenset({"SSRE"}), "you can't approve this: you requested this action"),
    ],
)
def test_unauthorised_clicks_change_nothing(store, user, groups, message):
    outcome = store.vote("a-123", user, groups, True, NOW)
    assert not outcome.accepted and outcome.message.startswith(message)
    assert store.get("a-123").status is ApprovalStatus.PENDING and store.get("a-123").version == 0


def test_group_member_may_approve(store):
    assert store.vote("a-123", "UG", frozenset({"SSRE"}), True, NOW).decided


def test_requester_may_withdraw_by_denying(store):
    outcome = store.vote("a-123", "UREQ", frozenset(), False, NOW, reason="wrong db")
    assert outcome.decided and store.get("a-123").denial_reason == "wrong db"


def test_two_person_rule_needs_distinct_approvers(db_path):
    store = ApprovalStore(open_db(db_path))
    store.create(request(rule=ApproverRule(users=("UA", "UB"), required=2)))
    one = store.vote("a-123", "UA", frozenset(), True, NOW)
    assert one.accepted and not one.decided and one.message == "approval 1 of 2 recorded."
    twice = store.vote("a-123", "UA", frozenset(), True, NOW)
    assert not twice.accepted and "already approved it" in twice.message
    two = store.vote("a-123", "UB", frozenset(), True, NOW)
    assert two.decided and store.get("a-123").deciders == ["UA", "UB"]


def test_click_after_expiry_expires_and_does_not_approve(store):
    late = store.vote("a-123", "UA", frozenset(), True, NOW + timedelta(hours=1))
    assert late.decided and not late.accepted and late.message == "this approval request has expired."
    assert store.get("a-123").status is ApprovalStatus.EXPIRED


def test_close_only_moves_pending_requests(store):
    assert store.close("a-123", ApprovalStatus.CANCELLED, NOW).status is ApprovalStatus.CANCELLED
    assert store.close("a-123", ApprovalStatus.EXPIRED, NOW) is None
    assert store.vote("a-123", "UA", frozenset(), True, NOW).message == (
        "this approval request is already cancelled.")


def test_racing_clicks_from_separate_connections_decide_exactly_once(db_path, store):
    """Eight writers, each with its own SQLite connection (as separate processes would be)."""
    barrier = threading.Barrier(8)
    outcomes = []

    def click(user):
        mine = ApprovalStore(open_db(db_path))
        barrier.wait()
        outcomes.append(mine.vote("a-123", user, frozenset({"SSRE"}), True, NOW))

    threads = [threading.Thread(target=click, args=(f"U{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o.decided]
    assert len(winners) == 1
    final = store.get("a-123")
    assert final.status is ApprovalStatus.APPROVED and len(final.votes) == 1
    losers = [o.message for o in outcomes if not o.decided]
    assert all(m == f"this was already approved by <@{final.votes[0].user}>." for m in losers)
