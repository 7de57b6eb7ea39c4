"""Inbound Slack traffic for tests: payload builders, request signing, and a deliverer.

Builders return a :class:`Payload`: the exact HTTP body Slack would POST (form for slash
commands and interactivity, JSON for the Events API), its content type, and the same payload as
a JSON object for Socket Mode. It unpacks as ``(body, content_type)``. Pass ``slack=`` (a running
:class:`~tests.fakes.slack.SlackEmulator`) to make the payload consistent with the emulated
workspace: ``response_url`` points at the emulator, a mention becomes a message that exists (so
the bot can react to it and read its thread), and a button click carries the message it was on.

Usage::

    payload = slash_command("redis info", user="U1", channel="C1", slack=slack)
    async with SlackClient(f"{bot_url}/slack/events") as deliver:
        delivery = await deliver.post(payload)                      # signed with SIGNING_SECRET
        assert (await deliver.post(payload, signature=Signature.FORGED)).status == 401
    slack.socket.send_payload(payload)                              # the Socket Mode way
"""

from __future__ import annotations

import hashlib
import asyncio
import hmac
import json
import secrets
import socket
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlencode, urlsplit

import aiohttp

from tests.fakes.slack_workspace import APP_ID, BOT_USER_ID, TEAM_DOMAIN, TEAM_ID

if TYPE_CHECKING:
    from tests.fakes.slack import SlackEmulator

SIGNING_SECRET = "opsbot-test-signing-secret"
VERIFICATION_TOKEN = "legacy-verification-token"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slack"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
PAGERDUTY_FIXTURE_TITLE = "Redis latency p99 above 500ms on cache-prod"


@dataclass(frozen=True)
class Payload:
    """An inbound request body plus its Socket Mode form; unpacks as ``(body, content_type)``."""

    body: bytes
    content_type: str
    data: dict[str, Any]
    envelope_type: str  # "slash_commands" | "events_api" | "interactive"

    def __iter__(self):
        return iter((self.body, self.content_type))


def now_ts() -> str:
    """A Slack message timestamp for 'now' (``seconds.micros``)."""
    micros = time.time_ns() // 1000
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def new_trigger_id() -> str:
    """A trigger id whose first part is the issue time in ms (the emulator expires it after 3 s)."""
    return f"{int(time.time() * 1000)}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}"


def new_event_id() -> str:
    return "Ev" + secrets.token_hex(5).upper()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Slack's v0 signature headers for ``body``: HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": "v0=" + digest.hexdigest()}


def forged_signature(body: bytes) -> dict[str, str]:
    """Well-formed, current headers signed with the wrong secret."""
    return sign("not-" + SIGNING_SECRET, body)


def stale_signature(secret: str, body: bytes, age: int = 6 * 60) -> dict[str, str]:
    """A correct signature over a timestamp older than Slack's 5-minute replay window."""
    return sign(secret, body, int(time.time()) - age)


def _form(fields: dict[str, Any]) -> Payload:
    clean = {k: v for k, v in fields.items() if v is not None}
    return Payload(urlencode(clean).encode(), FORM, clean, "slash_commands")


def _interactive(payload: dict[str, Any]) -> Payload:
    body = urlencode({"payload": json.dumps(payload)}).encode()
    return Payload(body, FORM, payload, "interactive")


def _event_callback(event: dict[str, Any], event_id: str | None) -> Payload:
    wrapper = {
        "token": VERIFICATION_TOKEN, "team_id": TEAM_ID, "api_app_id": APP_ID, "event": event,
        "type": "event_callback", "event_id": event_id or new_event_id(),
        "event_time": int(float(event.get("event_ts", time.time()))),
        "authorizations": [{"enterprise_id": None, "team_id": TEAM_ID, "user_id": BOT_USER_ID,
                            "is_bot": True, "is_enterprise_install": False}],
        "is_ext_shared_channel": False, "event_context": "4-" + secrets.token_hex(8),
    }
    return Payload(json.dumps(wrapper).encode(), JSON, wrapper, "events_api")


def _response_url(slack: SlackEmulator | None, given: str | None, builder: str,
                  **binding: str | None) -> str:
    if given:
        return given
    if slack is None:
        raise ValueError(f"{builder}() needs slack= (to mint a response_url on the emulator) "
                         "or an explicit response_url=")
    return slack.response_url(**binding)


def slash_command(text: str, *, user: str = "U1", channel: str = "C1", command: str = "/ops",
                  slack: SlackEmulator | None = None, response_url: str | None = None,
                  channel_name: str = "ops", user_name: str | None = None) -> Payload:
    """A slash command POST (form-encoded), with a fresh ``trigger_id``."""
    return _form({
        "token": VERIFICATION_TOKEN, "team_id": TEAM_ID, "team_domain": TEAM_DOMAIN,
        "channel_id": channel, "channel_name": channel_name, "user_id": user,
        "user_name": user_name or user.lower(), "command": command, "text": text,
        "api_app_id": APP_ID, "is_enterprise_install": "false",
        "response_url": _response_url(slack, response_url, "slash_command", channel=channel,
                                      user=user),
        "trigger_id": new_trigger_id(),
    })


def app_mention(text: str, *, user: str = "U1", channel: str = "C1", ts: str | None = None,
                thread_ts: str | None = None, event_id: str | None = None,
                slack: SlackEmulator | None = None) -> Payload:
    """An ``app_mention`` event; ``text`` usually starts with ``<@UBOT>``."""
    ts = _seed(slack, channel, text, user=user, ts=ts, thread_ts=thread_ts)
    event = {"type": "app_mention", "user": user, "text": text, "ts": ts, "channel": channel,
             "event_ts": ts, "client_msg_id": secrets.token_hex(8), "team": TEAM_ID,
             "blocks": [_rich_text(text)]}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return _event_callback(event, event_id)


def message_event(text: str, *, user: str | None = "U1", channel: str = "C1",
                  ts: str | None = None, thread_ts: str | None = None,
                  event_id: str | None = None, channel_type: str = "channel",
                  extra: dict[str, Any] | None = None,
                  slack: SlackEmulator | None = None) -> Payload:
    """A ``message`` event; ``extra`` adds or overrides event fields (subtype, bot_id ...)."""
    extra = extra or {}
    ts = _seed(slack, channel, text, user=user, ts=ts, thread_ts=thread_ts,
               bot_id=extra.get("bot_id"), blocks=extra.get("blocks"),
               attachments=extra.get("attachments"))
    event = {"type": "message", "text": text, "ts": ts, "channel": channel,
             "event_ts": ts, "channel_type": channel_type, "team": TEAM_ID}
    event.update({k: v for k, v in {"user": user, "thread_ts": thread_ts}.items() if v})
    event.update(extra)
    return _event_callback(event, event_id)


def pagerduty_alert(style: str = "modern", *, channel: str = "C1", ts: str | None = None,
                    title: str | None = None, event_id: str | None = None,
                    slack: SlackEmulator | None = None) -> Payload:
    """PagerDuty's Slack app announcing an incident, from ``tests/fixtures/slack``.

    ``style="classic"`` is the legacy integration (``subtype: bot_message`` with attachments),
    ``style="modern"`` the current app (``bot_id`` + ``bot_profile`` + blocks, no subtype).
    ``title`` replaces the fixture's incident title everywhere it appears.
    """
    path = FIXTURES / f"pagerduty_{style}_message.json"
    if not path.is_file():
        raise ValueError(f"No PagerDuty fixture for style {style!r}; use 'classic' or 'modern'.")
    event = json.loads(path.read_text())
    if title is not None:
        event = _replace_strings(event, PAGERDUTY_FIXTURE_TITLE, title)
    text = event.get("text", "")
    ts = _seed(slack, channel, text, user=event.get("user"), ts=ts, bot_id=event["bot_id"],
               blocks=event.get("blocks"), attachments=event.get("attachments"))
    event.update(channel=channel, ts=ts, event_ts=ts)
    return _event_callback(event, event_id)


def block_actions(*, user: str = "U1", channel: str = "C1", message_ts: str,
                  action_id: str, value: str = "", block_id: str | None = None,
                  message: dict[str, Any] | None = None, thread_ts: str | None = None,
                  slack: SlackEmulator | None = None,
                  response_url: str | None = None,
                  container: dict[str, Any] | None = None) -> Payload:
    """A button click (form field ``payload=``) on the message at ``message_ts``.

    With ``slack=``, ``message`` defaults to that message as the emulator holds it (blocks
    included), and the ``response_url`` is bound to it (``replace_original`` edits it).
    ``container`` changes the payload's container (a key set to None is left out): a forged
    or malformed click.
    """
    if message is None and slack is not None:
        found = slack.message(channel, message_ts)
        message = found.to_api() if found else None
    message = message or {"type": "message", "ts": message_ts, "text": "", "blocks": []}
    button = _find_element(message.get("blocks", []), action_id)
    where = {"type": "message", "message_ts": message_ts, "channel_id": channel,
             "is_ephemeral": False, **({"thread_ts": thread_ts} if thread_ts else {}),
             **(container or {})}
    return _interactive({
        "type": "block_actions", "user": _user(user), "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN, "trigger_id": new_trigger_id(),
        "container": {k: v for k, v in where.items() if v is not None},
        "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN}, "enterprise": None,
        "is_enterprise_install": False, "channel": {"id": channel, "name": channel.lower()},
        "message": message, "state": {"values": {}},
        "response_url": _response_url(slack, response_url, "block_actions", channel=channel,
                                      user=user, message_ts=message_ts, thread_ts=thread_ts),
        "actions": [{"action_id": action_id, "block_id": block_id or button[0],
                     "text": button[1], "value": value, "type": "button",
                     "action_ts": now_ts()}],
    })


def view_submission(*, user: str = "U1", callback_id: str, values: dict[str, Any],
                    private_metadata: str = "", view_id: str | None = None,
                    slack: SlackEmulator | None = None) -> Payload:
    """A modal submitted; ``values`` is ``state.values`` (block_id → action_id → value)."""
    view: dict[str, Any] = {"type": "modal", "title": {"type": "plain_text", "text": "opsbot"},
                            "blocks": []}
    if slack is not None and view_id is not None:
        view = next((v.to_api() for v in slack.views() if v.id == view_id), view)
    view = {**view, "id": view_id or "V" + secrets.token_hex(4).upper(), "team_id": TEAM_ID,
            "callback_id": callback_id, "private_metadata": private_metadata,
            "state": {"values": values}, "hash": secrets.token_hex(8), "app_id": APP_ID}
    return _interactive({
        "type": "view_submission", "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
        "user": _user(user), "api_app_id": APP_ID, "token": VERIFICATION_TOKEN,
        "trigger_id": new_trigger_id(), "view": view, "response_urls": [],
        "is_enterprise_install": False, "enterprise": None,
    })


def url_verification(challenge: str) -> Payload:
    data = {"token": VERIFICATION_TOKEN, "challenge": challenge, "type": "url_verification"}
    return Payload(json.dumps(data).encode(), JSON, data, "events_api")


def _seed(slack: SlackEmulator | None, channel: str, text: str, *, ts: str | None,
          **fields: Any) -> str:
    """Make the inbound message exist in the emulator (when given); returns its ts."""
    if slack is None:
        return ts or now_ts()
    return slack.add_message(channel, text, ts=ts, **fields)


def _rich_text(text: str) -> dict[str, Any]:
    return {"type": "rich_text", "block_id": secrets.token_hex(2),
            "elements": [{"type": "rich_text_section",
                          "elements": [{"type": "text", "text": text}]}]}


def _user(user: str) -> dict[str, str]:
    return {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM_ID}


def _find_element(blocks: list[Any], action_id: str) -> tuple[str, dict[str, Any]]:
    """(block_id, text) of the element a click refers to, as Slack reports them."""
    for block in blocks:
        for element in block.get("elements", []) + [block.get("accessory") or {}]:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                text = element.get("text") or {"type": "plain_text", "text": action_id}
                return block.get("block_id", "actions"), text
    return "actions", {"type": "plain_text", "text": action_id}


def _replace_strings(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {k: _replace_strings(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, old, new) for v in value]
    return value.replace(old, new) if isinstance(value, str) else value


class Signature(Enum):
    """How :meth:`SlackClient.post` signs a delivery."""

    VALID = "valid"
    FORGED = "forged"  # right shape, wrong secret
    STALE = "stale"  # right secret, timestamp outside the 5-minute window
    MISSING = "missing"  # no signature headers at all


@dataclass(frozen=True)
class Delivery:
    """The bot's answer to one delivery."""

    status: int
    body: str
    headers: dict[str, str]
    elapsed: float

    def json(self) -> Any:
        return json.loads(self.body)


class SlackClient:
    """Delivers signed payloads to the bot's ``POST /slack/events`` over real HTTP, like Slack."""

    def __init__(self, url: str, signing_secret: str = SIGNING_SECRET, timeout: float = 10.0):
        self.url = url
        self.signing_secret = signing_secret
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def headers(self, payload: Payload, signature: Signature = Signature.VALID) -> dict[str, str]:
        signed = {
            Signature.VALID: lambda: sign(self.signing_secret, payload.body),
            Signature.FORGED: lambda: forged_signature(payload.body),
            Signature.STALE: lambda: stale_signature(self.signing_secret, payload.body),
            Signature.MISSING: dict,
        }[signature]()
        return {"Content-Type": payload.content_type, "User-Agent": "Slackbot 1.0", **signed}

    async def post(self, payload: Payload, *, signature: Signature = Signature.VALID,
                   retry_num: int | None = None, retry_reason: str = "http_timeout") -> Delivery:
        """POST one payload; ``retry_num`` adds ``X-Slack-Retry-Num``/``-Reason`` like a resend."""
        headers = self.headers(payload, signature)
        if retry_num is not None:
            headers.update({"X-Slack-Retry-Num": str(retry_num),
                            "X-Slack-Retry-Reason": retry_reason})
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        started = time.monotonic()
        async with self._session.post(self.url, data=payload.body, headers=headers) as response:
            body = await response.text()
        return Delivery(response.status, body, dict(response.headers),
                        time.monotonic() - started)


async def post_in_pieces(url: str, body: bytes, headers: dict[str, str], pieces: int = 3,
                         gap_s: float = 0.15) -> int:
    """POST ``body`` over a raw socket in ``pieces`` writes ``gap_s`` apart; the HTTP status.

    A real network delivers a large body in several TCP segments, seconds apart on a bad link.
    The gap is the test's input (how the body arrives), not a wait for an outcome: each piece is
    flushed with Nagle off, so the server sees it arrive on its own.
    """
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    size = -(-len(body) // pieces)
    try:
        for n in range(pieces):
            writer.write((head if n == 0 else b"") + body[n * size:(n + 1) * size])
            await writer.drain()
            if n < pieces - 1:
                await asyncio.sleep(gap_s)
        status_line = await asyncio.wait_for(reader.readline(), 10)
        return int(status_line.split()[1])
    finally:
        writer.close()
