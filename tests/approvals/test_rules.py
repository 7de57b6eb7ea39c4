"""Pure approver checks: who may approve, who may deny, and when enough people have."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from approvals.rules import ApproverRule, refusal, rejection_refusal, remaining

TWO_PERSON = ApproverRule(
    users=("U1", "U2"), groups=("S0SRE",), required=2, requester_may_approve=False
)
SELF_OK = ApproverRule(users=("U1",), groups=("S0SRE",))
NOBODY: frozenset[str] = frozenset()
SRE = frozenset({"S0SRE"})


@pytest.mark.parametrize(
    ("rule", "clicker", "groups", "approved", "expected"),
    [
        (TWO_PERSON, "U1", NOBODY, NOBODY,
         "you requested this action, and its tier needs someone else to approve it."),
        (TWO_PERSON, "U2", NOBODY, NOBODY, None),
        (TWO_PERSON, "U2", NOBODY, frozenset({"U2"}),
         "you already approved it; it needs a different approver."),
        (TWO_PERSON, "U7", SRE, frozenset({"U2"}), None),
        (TWO_PERSON, "U7", frozenset({"S0OTHER"}), NOBODY,
         "you are not one of its approvers (2 of <@U1>, <@U2>, <!subteam^S0SRE>)."),
        (SELF_OK, "U1", NOBODY, NOBODY, None),
        (SELF_OK, "U1", NOBODY, frozenset({"U1"}),
         "you already approved it; it needs a different approver."),
        (SELF_OK, "U9", NOBODY, NOBODY,
         "you are not one of its approvers (<@U1>, <!subteam^S0SRE>)."),
        (ApproverRule(), "U1", NOBODY, NOBODY, "you are not one of its approvers (nobody)."),
    ],
    ids=["requester-at-tier4", "approver", "same-person-twice", "via-slack-group",
         "outsider", "self-approval-allowed", "self-twice", "outsider-2", "empty-rule"],
)
def test_refusal(rule, clicker, groups, approved, expected) -> None:
    assert refusal(rule, "U1", clicker, groups, approved) == expected


def test_two_person_rule_counts_distinct_approvers() -> None:
    approved: frozenset[str] = frozenset()
    for clicker, groups in [("U2", NOBODY), ("U2", NOBODY), ("U8", SRE)]:
        if refusal(TWO_PERSON, "U1", clicker, groups, approved) is None:
            approved |= {clicker}
    assert approved == {"U2", "U8"}
    assert remaining(TWO_PERSON, approved) == 0
    assert remaining(TWO_PERSON, frozenset({"U2"})) == 1
    assert remaining(SELF_OK, NOBODY) == 1


@pytest.mark.parametrize(
    ("clicker", "groups", "expected"),
    [
        ("U1", NOBODY, None),  # the requester may withdraw
        ("U2", NOBODY, None),
        ("U7", SRE, None),
        ("U7", NOBODY,
         "only its approvers (2 of <@U1>, <@U2>, <!subteam^S0SRE>) or the requester can deny it."),
    ],
    ids=["requester-withdraws", "approver", "group-member", "outsider"],
)
def test_rejection_refusal(clicker, groups, expected) -> None:
    assert rejection_refusal(TWO_PERSON, "U1", clicker, groups) == expected


def test_describe_and_people() -> None:
    assert TWO_PERSON.describe() == "2 of <@U1>, <@U2>, <!subteam^S0SRE>"
    assert SELF_OK.people() == "<@U1>, <!subteam^S0SRE>"
    assert ApproverRule().people() == ""


def test_zero_required_approvals_is_rejected() -> None:
    with pytest.raises(ValidationError):
        ApproverRule(users=("U1",), required=0)


def test_a_rule_survives_a_json_round_trip_unchanged() -> None:
    """Approval requests store the rule; a stored rule must decide exactly as the original."""
    restored = ApproverRule.model_validate_json(TWO_PERSON.model_dump_json())
    assert restored == TWO_PERSON
    assert refusal(restored, "U1", "U1", NOBODY) == refusal(TWO_PERSON, "U1", "U1", NOBODY)
