"""Approval cards: snapshot-tested Block Kit, and Slack's limits respected for huge inputs.

Regenerate snapshots after an intended change with ``UPDATE_SNAPSHOTS=1 pytest tests/approvals``
and review the diff.
"""

import html
import json
import os
import re
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from approvals.cards import (
    APPROVE_ACTION,
    DENY_ACTION,
    approval_card,
    attachment,
    attachment_name,
    button_value,
    deny_reason_view,
    parse_button_value,
)
from approvals.mrkdwn import MARKER
from approvals.models import ApprovalRequest, ApprovalStatus, Vote
from approvals.rules import ApproverRule

BIDI_OR_INVISIBLE = re.compile("[\u202a-\u202e\u2066-\u2069\u200b-\u200f\u2028\u2029]")
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


def card_text(card) -> str:
    """Every piece of text an approver can read on the card (and its confirm dialog)."""
    texts = [card["text"]]
    for block in card["blocks"]:
        texts += [block.get("text", {}).get("text", "")]
        texts += [f["text"] for f in block.get("fields", [])]
        for element in block.get("elements", []):
            texts += [element.get("confirm", {}).get("text", {}).get("text", "")]
    return "\n".join(texts)


def shown_params(card) -> str | None:
    """The params JSON as the card shows it (its code blocks joined), or None when it points
    to the attached file instead."""
    texts = [b.get("text", {}).get("text", "") for b in card["blocks"]]
    start = next(i for i, text in enumerate(texts) if text.startswith("*Action*"))
    if "```" not in texts[start]:
        return None
    parts = [texts[start], *takewhile(lambda text: text.startswith("```"), texts[start + 1:])]
    return "".join(part.split("```")[1] for part in parts)


def assert_whole_action_visible(req: ApprovalRequest) -> None:
    """The rule: the card shows every parameter exactly, or names the file that has the
    complete action, and :func:`attachment` returns it."""
    card = approval_card(req)
    limits_ok(card)
    params = req.canonical["params"]
    shown = shown_params(card)
    file = attachment(req)
    if shown is not None:
        assert json.loads(html.unescape(shown)) == params, "the card shows the exact params"
    else:
        assert attachment_name(req) in card_text(card) and file is not None
    if file is not None:
        assert json.loads(file)["action"] == req.canonical and json.loads(file)["hash"] == req.action_hash
        assert json.loads(file)["preview"] == req.preview
    assert MARKER not in "".join(b.get("text", {}).get("text", "") for b in card["blocks"][:2])


def test_a_3000_character_key_and_the_key_after_it_are_both_on_the_card_or_in_the_file():
    keys = ["a" * 3000, "prod:important"]
    req = request(tier=3, summary="Delete 2 Redis key(s): " + ", ".join(keys),
                  canonical={"toolset": "redis", "action": "del", "params": {"keys": keys},
                             "target": {"kind": "redis", "name": "h:6379/0", "attrs": {}}},
                  preview="2 of 2 keys exist:\n" + "\n".join(f"{k}: string" for k in keys))
    assert_whole_action_visible(req)
    card = approval_card(req)
    assert "prod:important" in card_text(card), "on the card itself (it fits in two sections)"


def test_an_action_too_long_for_a_card_is_attached_whole_never_cut():
    keys = [f"cache:{i:03d}:" + "k" * 100 for i in range(99)] + ["prod:important"]
    req = request(tier=3, summary="Delete 100 Redis key(s): " + ", ".join(keys[:5]) + " …",
                  canonical={"toolset": "redis", "action": "del", "params": {"keys": keys},
                             "target": {"kind": "redis", "name": "h:6379/0", "attrs": {}}},
                  preview="diff\n" * 5000, reason="<@U1> " * 2000)
    card = approval_card(req)
    assert_whole_action_visible(req)
    assert shown_params(card) is None and "prod:important" not in card_text(card)
    assert "prod:important" in attachment(req)
    assert "full preview is in the file" in card_text(card)


def test_a_small_action_needs_no_file():
    assert attachment(request()) is None


untrusted = st.text(st.characters(codec="utf-8"), max_size=400)
values = st.recursive(st.none() | st.booleans() | st.integers() | untrusted,
                      lambda inner: st.lists(inner, max_size=30)
                      | st.dictionaries(untrusted, inner, max_size=8), max_leaves=60)


@given(summary=untrusted, target=untrusted, reason=untrusted,
       preview=st.none() | st.text(max_size=6000), params=st.dictionaries(untrusted, values),
       repeat=st.integers(1, 40))
def test_any_action_is_shown_whole_or_attached_whole(summary, target, reason, preview, params,
                                                     repeat):
    params = {**params, "keys": [summary] * repeat}
    req = request(summary=summary, target=target, reason=reason, preview=preview,
                  canonical={"toolset": "t", "action": "a", "params": params, "target": {}})
    assert_whole_action_visible(req)


SPOOFS = [
    "x\n*Target*\nredis staging:6379/0",
    "x\n*Approvals*\n2 of 2 :white_check_mark: already approved",
    "x` *Approvals* 2 of 2 `y",
    "```\n*Tier*\n0 observe\n```",
    "gnp.\u202eexe",  # right-to-left override
    "a\u2066b\u2069c\u200bd",
    "_italic_ ~strike~ <!here>",
]


@pytest.mark.parametrize("spoof", SPOOFS)
def test_untrusted_text_cannot_draw_lines_or_formatting_on_the_card(spoof):
    """Key names (and any model-chosen param) reach the summary, target, params and preview;
    none of them can start a line, format text or reorder it."""
    req = request(summary=f"Read Redis key `{spoof}`", target=spoof, reason=spoof,
                  preview=spoof, canonical={"toolset": "redis", "action": "get",
                                            "params": {"key": spoof}, "target": {}})
    card, modal = approval_card(req), deny_reason_view(req)
    everything = card_text(card) + "\n" + modal["blocks"][0]["text"]["text"]
    assert not BIDI_OR_INVISIBLE.search(everything), "invisible controls are shown as escapes"
    assert "<!here>" not in everything
    outside_blocks = re.sub(r"```.*?```", "", everything, flags=re.S)  # shown verbatim
    headings = [line for line in outside_blocks.split("\n")
                if line.startswith(("*Target*", "*Approvals*", "*Tier*"))]
    assert headings == ["*Target*", "*Tier*", "*Approvals*"], "only the card's own fields"
    for block in [card["blocks"][0], card["blocks"][1], *card["blocks"][3:-1], modal["blocks"][0]]:
        texts = [block.get("text", {}).get("text", "")] + [f["text"] for f in block.get("fields", [])]
        for text in texts:
            bare = re.sub(r"```.*?```|`[^`\n]*`", "", text, flags=re.S)
            assert not re.search(r"\*Approvals\* 2|_italic_|~strike~|\*Tier\*\n0", bare), text


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
