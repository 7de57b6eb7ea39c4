"""Approval cards: snapshot-tested Block Kit, and Slack's limits respected for huge inputs.

Regenerate snapshots after an intended change with ``UPDATE_SNAPSHOTS=1 pytest tests/approvals``
and review the diff.
"""

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path


from approvals.cards import (
    APPROVE_ACTION,
    DENY_ACTION,
    approval_card,
    button_value,
    deny_reason_view,
    parse_button_value,
)
from approvals.models import ApprovalRequest, ApprovalStatus, Vote
from approvals.rules import ApproverRule

SNAPSHOTS = Path(__file__).resolve().parents[1] / "fixtures" / "cards"
NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def request(**changes) -> ApprovalRequest:
    base = ApprovalRequest(
        id="a-123", run_id="r-1", thread_id="T1:C1:1.0", call_id="r-1-1", interrupt_id="i1",
        action_hash="ab" * 32,
        canonical={"toolset": "redis", "action": "flushdb", "params": {"db": 0},
                   "target": {"kind": "redis", "name": "127.0.0.1:6379/0", "attrs": {}}},
        summary="Delete every key in the Redis database 0", target="redis 127.0.0.1:6379/0",
        tier=4, requester="UREQ", reason="Requested with `redis flushdb db=0`.",
        rule=ApproverRule(users=("UAPP",), groups=("SSRE",), required=2,
                          requester_may_approve=False),
        policy_rule="prod-redis", channel="C1", thread_ts="1.0", created_at=NOW,
        expires_at=NOW + timedelta(minutes=30),
    )
    return base.model_copy(update=changes)


def snapshot(name: str, value) -> None:
    path = SNAPSHOTS / f"{name}.json"
    text = json.dumps(value, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.write_text(text)
    assert path.exists(), f"missing snapshot {path.name}: run with UPDATE_SNAPSHOTS=1 and review"
    assert text == path.read_text()


def limits_ok(card) -> None:
    """The Block Kit limits Slack enforces (and the emulator checks)."""
    assert len(card["blocks"]) <= 50 and len(card["text"]) <= 4000
    for block in card["blocks"]:
        if "text" in block:
            assert len(block["text"]["text"]) <= 3000
        for field in block.get("fields", []):
            assert len(field["text"]) <= 2000
        for element in block.get("elements", []):
            assert len(element.get("value", "")) <= 2000
            text = element.get("text", "")
            assert len(text["text"] if isinstance(text, dict) else text) <= 3000
            if "confirm" in element:
                assert len(element["confirm"]["text"]["text"]) <= 300


def test_pending_tier4_card_snapshot():
    card = approval_card(request())
    snapshot("pending_tier4", card)
    actions = card["blocks"][-1]
    assert [e["action_id"] for e in actions["elements"]] == [APPROVE_ACTION, DENY_ACTION]
    assert actions["elements"][0]["style"] == "primary" and "confirm" in actions["elements"][0]
    assert actions["elements"][1]["style"] == "danger"


def test_pending_tier3_card_has_no_confirm_dialog():
    card = approval_card(request(tier=3, rule=ApproverRule(users=("UAPP",))))
    assert "confirm" not in card["blocks"][-1]["elements"][0]


def test_decided_card_snapshot_has_no_buttons():
    decided = request(status=ApprovalStatus.DENIED, decided_at=NOW + timedelta(minutes=2),
                      votes=[Vote(user="UAPP", approve=False, at=NOW, reason="not during peak")])
    card = approval_card(decided)
    snapshot("denied", card)
    assert all(b["type"] != "actions" for b in card["blocks"])
    assert "Denied* by <@UAPP>" in card["blocks"][-1]["text"]["text"]
    assert "not during peak" in card["blocks"][-1]["text"]["text"]


def test_approved_card_names_every_approver():
    approved = request(status=ApprovalStatus.APPROVED, decided_at=NOW,
                       votes=[Vote(user="U1", approve=True, at=NOW),
                              Vote(user="U2", approve=True, at=NOW)])
    text = approval_card(approved)["blocks"][-1]["text"]["text"]
    assert "Approved* by <@U1>, <@U2>" in text


def test_huge_params_preview_and_summary_are_truncated_not_rejected():
    huge = request(summary="x" * 10_000, reason="<@U1> " * 2000, preview="diff\n" * 5000,
                   canonical={"params": {"keys": ["k" * 100] * 500}})
    card = approval_card(huge)
    limits_ok(card)
    assert any("… (truncated)" in b.get("text", {}).get("text", "") for b in card["blocks"])


def test_untrusted_text_cannot_form_mentions_or_links():
    card = approval_card(request(summary="<!channel> <https://evil|click>"))
    text = card["blocks"][0]["text"]["text"]
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text


def test_button_value_round_trip_and_garbage():
    assert parse_button_value(button_value(request())) == ("a-123", "ab" * 32)
    for junk in ("", "{", "[]", '{"approval": 1}', "null"):
        assert parse_button_value(junk) is None


def test_deny_modal_has_optional_reason():
    view = deny_reason_view(request())
    assert view["type"] == "modal" and view["blocks"][1]["optional"] is True
