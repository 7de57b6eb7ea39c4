"""Block Kit limits the emulator enforces, one table: each limit just over, and exactly at, it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.slack_blocks import MESSAGE_MAX_BLOCKS, VIEW_MAX_BLOCKS, block_errors


def section(text: str = "ok", **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def button(text: str = "Go", **extra: Any) -> dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": text}, **extra}


def actions(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "actions", "elements": list(elements)}


def confirm(text: str) -> dict[str, Any]:
    plain = {"type": "plain_text"}
    return {"title": {**plain, "text": "Sure?"}, "text": {**plain, "text": text},
            "confirm": {**plain, "text": "Yes"}, "deny": {**plain, "text": "No"}}


def context(count: int) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": "x"}] * count}


def header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text}}


CASES = [
    ("51 blocks", [section()] * 51, "must be less than 51 items [json-pointer:/blocks]"),
    ("section text", [section("x" * 3001)],
     "must be less than 3001 characters [json-pointer:/blocks/0/text/text]"),
    ("header text", [header("h" * 151)],
     "must be less than 151 characters [json-pointer:/blocks/0/text/text]"),
    ("button text", [actions(button("b" * 76))],
     "must be less than 76 characters [json-pointer:/blocks/0/elements/0/text/text]"),
    ("button value", [actions(button(value="v" * 2001))],
     "must be less than 2001 characters [json-pointer:/blocks/0/elements/0/value]"),
    ("action_id", [actions(button(action_id="a" * 256))],
     "must be less than 256 characters [json-pointer:/blocks/0/elements/0/action_id]"),
    ("block_id", [section(block_id="b" * 256)],
     "must be less than 256 characters [json-pointer:/blocks/0/block_id]"),
    ("confirm text", [actions(button(confirm=confirm("c" * 301)))],
     "must be less than 301 characters [json-pointer:/blocks/0/elements/0/confirm/text/text]"),
    ("context elements", [context(11)],
     "must be less than 11 items [json-pointer:/blocks/0/elements]"),
    ("actions elements", [actions(*[button(action_id=f"a{i}") for i in range(26)])],
     "must be less than 26 items [json-pointer:/blocks/0/elements]"),
    ("empty section text", [section("")],
     "must be more than 0 characters [json-pointer:/blocks/0/text/text]"),
    ("markdown header", [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}],
     "must be one of ['plain_text'] [json-pointer:/blocks/0/text/type]"),
    ("duplicate block_id", [section(block_id="x"), section(block_id="x")],
     "duplicate block_id `x` [json-pointer:/blocks/1/block_id]"),
    ("duplicate action_id", [actions(button(action_id="go"), button(action_id="go"))],
     "duplicate action_id `go` [json-pointer:/blocks/0/elements/1/action_id]"),
    ("unknown block type", [{"type": "sectoin"}],
     "unsupported block type `sectoin` [json-pointer:/blocks/0/type]"),
    ("button style", [actions(button(style="green"))],
     "must be one of ['danger', 'primary'] [json-pointer:/blocks/0/elements/0/style]"),
    ("not a list", {"type": "section"}, "must be an array [json-pointer:/blocks]"),
    ("field slack_sdk drops", [section(colour="red")],
     "slack_sdk: does not survive the model unchanged (sent {colour: str, text: {text: str, "
     "type: str}, type: str}, kept {text: {text: str, type: str}, type: str}) "
     "[json-pointer:/blocks/0]"),
    ("task status slack_sdk refuses", [{"type": "task_card", "task_id": "t1", "title": "Read",
                                        "status": "waiting"}],
     "slack_sdk: status must be an expected value (pending, in_progress, complete, or error) "
     "[json-pointer:/blocks/0]"),
    ("empty feedback buttons", [{"type": "context_actions", "elements": []}],
     "slack_sdk: elements attribute must be specified [json-pointer:/blocks/0]"),
]


@pytest.mark.parametrize(("blocks", "error"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_limit_is_reported_with_its_pointer(blocks: Any, error: str) -> None:
    assert block_errors(blocks) == [error]


AT_THE_LIMIT = [
    ("50 blocks", [section()] * 50),
    ("section text", [section("x" * 3000)]),
    ("header text", [header("h" * 150)]),
    ("button", [actions(button("b" * 75, value="v" * 2000, action_id="a" * 255,
                               confirm=confirm("c" * 300)))]),
    ("context", [context(10)]),
    ("actions", [actions(*[button(action_id=f"a{i}") for i in range(25)])]),
    ("fields", [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2000}] * 10}]),
    ("plan with tasks and feedback buttons", [
        {"type": "plan", "title": "Investigating", "tasks": [
            {"type": "task_card", "task_id": "t1", "title": "Read INFO", "status": "complete"}]},
        {"type": "context_actions", "elements": [{
            "type": "feedback_buttons", "action_id": "feedback",
            "positive_button": {"text": {"type": "plain_text", "text": "Good"}, "value": "up"},
            "negative_button": {"text": {"type": "plain_text", "text": "Bad"}, "value": "down"}}]}]),
    ("divider and rich text", [{"type": "divider"}, {"type": "rich_text", "elements": [
        {"type": "rich_text_section", "elements": [{"type": "text", "text": "hi"}]}]}]),
]


@pytest.mark.parametrize("blocks", [c[1] for c in AT_THE_LIMIT], ids=[c[0] for c in AT_THE_LIMIT])
def test_blocks_at_the_limit_pass(blocks: list[Any]) -> None:
    assert block_errors(blocks) == []


def test_views_allow_a_hundred_blocks_and_errors_accumulate() -> None:
    assert block_errors([section()] * 100, VIEW_MAX_BLOCKS) == []
    assert len(block_errors([section("")] * 2 + [header("")], MESSAGE_MAX_BLOCKS)) == 3
