"""Payload builders and signing, checked against slack_sdk's own verifier and Slack's shapes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest
from slack_sdk.signature import SignatureVerifier

from tests.fakes.payloads import (
    SIGNING_SECRET,
    app_mention,
    block_actions,
    forged_signature,
    message_event,
    pagerduty_alert,
    sign,
    slash_command,
    stale_signature,
    view_submission,
)
from tests.fakes.slack import SlackEmulator
from tests.fakes.slack_blocks import block_errors


@pytest.fixture
def slack() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emulator:
        yield emulator


def verifies(headers: dict[str, str], body: bytes) -> bool:
    return SignatureVerifier(SIGNING_SECRET).is_valid_request(body, headers)


def test_signatures_match_what_slack_sdk_verifies() -> None:
    body = b'{"type":"event_callback"}'
    assert verifies(sign(SIGNING_SECRET, body), body)
    assert not verifies(sign(SIGNING_SECRET, body), body + b" ")
    assert not verifies(forged_signature(body), body)
    assert not verifies(stale_signature(SIGNING_SECRET, body), body)
    fixed = sign("8f742231b10e8888abcd99yyyzzz85a5", b"x", timestamp=1531420618)
    assert fixed["X-Slack-Request-Timestamp"] == "1531420618"
    assert fixed["X-Slack-Signature"].startswith("v0=") and len(fixed["X-Slack-Signature"]) == 67


def test_slash_command_is_a_form_with_an_emulator_response_url(slack: SlackEmulator) -> None:
    body, content_type = slash_command("redis info", user="U2", channel="C3", slack=slack)
    fields = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    assert content_type == "application/x-www-form-urlencoded"
    assert (fields["command"], fields["text"], fields["user_id"], fields["channel_id"]) == (
        "/ops", "redis info", "U2", "C3")
    assert fields["response_url"].startswith(slack.origin + "/webhook/")
    assert int(fields["trigger_id"].split(".")[0]) <= time.time() * 1000


def test_builders_that_need_a_response_url_say_so() -> None:
    with pytest.raises(ValueError, match=r"slash_command\(\) needs slack="):
        slash_command("x")
    with pytest.raises(ValueError, match=r"block_actions\(\) needs slack="):
        block_actions(message_ts="1.1", action_id="approve")
    assert "response_url" in slash_command("x", response_url="http://127.0.0.1:1/h").data


def test_events_have_the_events_api_wrapper(slack: SlackEmulator) -> None:
    payload = app_mention("<@UBOT> hi", user="U2", channel="C3", thread_ts="1.000100",
                          event_id="Ev123", slack=slack)
    wrapper = json.loads(payload.body)
    assert (wrapper["type"], wrapper["event_id"], payload.envelope_type) == (
        "event_callback", "Ev123", "events_api")
    assert wrapper["authorizations"][0]["user_id"] == "UBOT"
    assert wrapper["event"]["thread_ts"] == "1.000100"
    assert slack.thread("C3", "1.000100")[0].text == "<@UBOT> hi"


def test_message_event_extra_fields_override() -> None:
    event = message_event("hello", channel_type="im", extra={"subtype": "message_changed"}).data
    assert (event["event"]["channel_type"], event["event"]["subtype"]) == ("im", "message_changed")


def test_pagerduty_fixtures_have_both_bot_message_shapes() -> None:
    classic = pagerduty_alert("classic").data["event"]
    modern = pagerduty_alert("modern", title="Disk full").data["event"]
    assert classic["subtype"] == "bot_message" and "user" not in classic
    assert classic["attachments"][0]["actions"][0]["text"] == "Acknowledge"
    assert "subtype" not in modern and modern["bot_profile"]["name"] == "PagerDuty"
    assert "[#1234] Disk full" in modern["blocks"][0]["text"]["text"]
    assert block_errors(modern["blocks"]) == []
    with pytest.raises(ValueError, match="use 'classic' or 'modern'"):
        pagerduty_alert("v3")


def test_interactive_payloads_are_form_encoded_json(slack: SlackEmulator) -> None:
    click = block_actions(user="U4", message_ts="1.2", action_id="deny", value="run-9",
                          slack=slack)
    decoded = json.loads(parse_qs(click.body.decode())["payload"][0])
    assert decoded == click.data and decoded["actions"][0]["value"] == "run-9"
    submit = view_submission(callback_id="reason", values={"b": {"a": {"type": "plain_text_input",
                                                                       "value": "why"}}})
    assert submit.data["view"]["state"]["values"]["b"]["a"]["value"] == "why"
    assert submit.envelope_type == "interactive"
