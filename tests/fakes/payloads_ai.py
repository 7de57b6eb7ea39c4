"""Inbound payloads of Slack's agent surface: assistant threads, App Home, message shortcuts,
and clicks on feedback buttons or on buttons in a Home tab.

Shapes follow Slack's event and interaction references (``assistant_thread_started``,
``assistant_thread_context_changed``, ``app_home_opened``, ``message_action``, ``block_actions``
from a view); like :mod:`tests.fakes.payloads`, pass ``slack=`` to keep them consistent with the
emulated workspace.

Usage::

    started = assistant_thread_started(user="U1", channel="D0U1", context_channel="C0OPS")
    await deliver.post(started)
    await deliver.post(im_message("why is redis slow?", user="U1", channel="D0U1",
                                  thread_ts=started.data["event"]["assistant_thread"]["thread_ts"],
                                  slack=slack))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.fakes.payloads import (
    VERIFICATION_TOKEN,
    Payload,
    _event_callback,
    _interactive,
    _response_url,
    _user,
    block_actions,
    message_event,
    new_trigger_id,
    now_ts,
)
from tests.fakes.slack_workspace import APP_ID, TEAM_DOMAIN, TEAM_ID

if TYPE_CHECKING:
    from tests.fakes.slack import SlackEmulator


def _assistant_event(kind: str, user: str, channel: str, thread_ts: str | None,
                     context_channel: str | None, event_id: str | None) -> Payload:
    thread_ts = thread_ts or now_ts()
    context = {"channel_id": context_channel, "team_id": TEAM_ID, "enterprise_id": None}
    event = {"type": kind, "event_ts": now_ts(), "assistant_thread": {
        "user_id": user, "channel_id": channel, "thread_ts": thread_ts,
        "context": {k: v for k, v in context.items() if v} if context_channel else {}}}
    return _event_callback(event, event_id)


def assistant_thread_started(*, user: str = "U1", channel: str = "D0U1",
                             thread_ts: str | None = None, context_channel: str | None = None,
                             event_id: str | None = None) -> Payload:
    """The user opened the app's split view (or a new chat in its DM): a new thread."""
    return _assistant_event("assistant_thread_started", user, channel, thread_ts,
                            context_channel, event_id)


def assistant_thread_context_changed(*, user: str = "U1", channel: str = "D0U1",
                                     thread_ts: str, context_channel: str,
                                     event_id: str | None = None) -> Payload:
    """The user moved to another channel with the split view open."""
    return _assistant_event("assistant_thread_context_changed", user, channel, thread_ts,
                            context_channel, event_id)


def im_message(text: str, *, user: str = "U1", channel: str = "D0U1",
               thread_ts: str | None = None, slack: SlackEmulator | None = None,
               event_id: str | None = None) -> Payload:
    """A person's message in the app's DM (an assistant thread when ``thread_ts`` is set)."""
    return message_event(text, user=user, channel=channel, thread_ts=thread_ts,
                         channel_type="im", slack=slack, event_id=event_id)


def app_home_opened(*, user: str = "U1", channel: str = "D0U1", tab: str = "home",
                    event_id: str | None = None) -> Payload:
    return _event_callback({"type": "app_home_opened", "user": user, "channel": channel,
                            "tab": tab, "event_ts": now_ts()}, event_id)


def message_shortcut(*, callback_id: str, user: str = "U1", channel: str = "C1",
                     message_ts: str, slack: SlackEmulator | None = None,
                     message: dict[str, Any] | None = None,
                     response_url: str | None = None) -> Payload:
    """A message shortcut chosen from a message's ⋮ menu (``message_action``)."""
    if message is None and slack is not None:
        found = slack.message(channel, message_ts)
        message = found.to_api() if found else None
    message = message or {"type": "message", "ts": message_ts, "text": ""}
    return _interactive({
        "type": "message_action", "token": VERIFICATION_TOKEN, "action_ts": now_ts(),
        "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN}, "user": _user(user),
        "channel": {"id": channel, "name": channel.lower()}, "is_enterprise_install": False,
        "enterprise": None, "callback_id": callback_id, "trigger_id": new_trigger_id(),
        "response_url": _response_url(slack, response_url, "message_shortcut",
                                      channel=channel, user=user),
        "message_ts": message_ts, "message": message, "api_app_id": APP_ID,
    })


def feedback_click(*, user: str = "U1", channel: str = "C1", message_ts: str, action_id: str,
                   value: str, slack: SlackEmulator | None = None,
                   thread_ts: str | None = None) -> Payload:
    """A click on one of a ``feedback_buttons`` element's two buttons."""
    payload = block_actions(user=user, channel=channel, message_ts=message_ts,
                            action_id=action_id, value=value, slack=slack, thread_ts=thread_ts)
    action = payload.data["actions"][0]
    action.pop("text", None)
    action["type"] = "feedback_buttons"
    return _interactive(payload.data)


def home_click(*, user: str, view: dict[str, Any], action_id: str, value: str,
               block_id: str | None = None) -> Payload:
    """A button clicked in a user's Home tab (``container.type: view``, no channel)."""
    return _interactive({
        "type": "block_actions", "user": _user(user), "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN, "trigger_id": new_trigger_id(),
        "container": {"type": "view", "view_id": view.get("id", "")},
        "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN}, "enterprise": None,
        "is_enterprise_install": False, "view": view, "state": {"values": {}},
        "actions": [{"action_id": action_id, "block_id": block_id or "home", "value": value,
                     "type": "button", "action_ts": now_ts(),
                     "text": {"type": "plain_text", "text": action_id}}],
    })
