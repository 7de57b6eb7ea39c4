"""Slack's Socket Mode WebSocket endpoint, served by the Slack emulator on ``/link``.

The bot calls ``apps.connections.open`` with its app-level token, gets
``ws://127.0.0.1:<port>/link?ticket=...``, connects, and receives ``hello``. A test then pushes
envelopes and waits for the bot's acks::

    envelope_id = slack.socket.send_envelope("slash_commands", payload.data)
    ack = await slack.socket.wait_for_ack(envelope_id)
    ack.payload            # the response payload, when the bot sent one

Envelopes sent before the bot has connected are queued and delivered after its ``hello``.
``disconnect()`` sends Slack's ``{"type": "disconnect"}`` frame, after which a well-behaved
client opens a fresh connection (visible as a second ``apps.connections.open`` call).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from tests.fakes.server import ServerThread, wait_until
from tests.fakes.slack_workspace import APP_ID

ENVELOPE_TYPES = ("events_api", "slash_commands", "interactive")
# interactive payloads whose ack may carry a response (errors, a new view ...)
RESPONSE_PAYLOAD_TYPES = {"view_submission", "block_suggestion", "view_closed"}


class HasEnvelope(Protocol):
    envelope_type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Ack:
    """What the client sent back for one envelope: ``{"envelope_id", "payload"?}``."""

    envelope_id: str
    payload: dict[str, Any] | None
    at: float


@dataclass(frozen=True)
class Envelope:
    """One envelope the emulator pushed (or queued) towards the bot."""

    envelope_id: str
    type: str
    body: dict[str, Any]
    sent_at: float


class SocketModeServer:
    """Connections, envelopes and acks of the emulated Socket Mode link."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: ServerThread | None = None
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []  # touched only on the server loop
        self._pending: list[str] = []  # serialised envelopes waiting for a connection
        self._envelopes: list[Envelope] = []
        self._acks: dict[str, Ack] = {}
        self._frames: list[Any] = []
        self.connections_opened = 0

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/link", self._handle), web.get("/link/", self._handle)]

    def attach(self, thread: ServerThread) -> None:
        self._thread = thread

    def issue_url(self) -> str:
        """A one-use WebSocket URL, as ``apps.connections.open`` returns."""
        ticket = uuid.uuid4().hex
        with self._lock:
            self._tickets.add(ticket)
        return f"ws://127.0.0.1:{self._require_thread().port}/link?ticket={ticket}"

    def send_envelope(
        self,
        type: str,
        payload: dict[str, Any],
        retry_attempt: int = 0,
        retry_reason: str = "",
        accepts_response_payload: bool | None = None,
    ) -> str:
        """Push one envelope to the bot (queued until it connects); returns its envelope_id."""
        if type not in ENVELOPE_TYPES:
            raise ValueError(f"Socket Mode envelope type must be one of {ENVELOPE_TYPES}, "
                             f"not {type!r}")
        envelope_id = str(uuid.uuid4())
        body = {"envelope_id": envelope_id, "type": type, "payload": payload,
                "accepts_response_payload": _accepts_response(type, payload,
                                                              accepts_response_payload)}
        if type == "events_api":
            body.update(retry_attempt=retry_attempt, retry_reason=retry_reason)
        with self._lock:
            self._envelopes.append(Envelope(envelope_id, type, body, time.monotonic()))
        self._require_thread().call_soon(self._deliver, json.dumps(body))
        return envelope_id

    def send_payload(self, payload: HasEnvelope, retry_attempt: int = 0,
                     retry_reason: str = "") -> str:
        """Push a builder's payload (``tests.fakes.payloads``) in its Socket Mode form."""
        return self.send_envelope(payload.envelope_type, payload.data, retry_attempt,
                                  retry_reason)

    def disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask connected clients to reconnect, as Slack does before recycling a link."""
        frame = json.dumps({"type": "disconnect", "reason": reason,
                            "debug_info": {"host": "applink-emulator"}})
        self._require_thread().call_soon(self._broadcast, frame)

    @property
    def connected(self) -> int:
        """How many client connections are open right now."""
        return sum(not ws.closed for ws in list(self._sockets))

    def acks(self) -> list[Ack]:
        with self._lock:
            return list(self._acks.values())

    def envelopes(self) -> list[Envelope]:
        with self._lock:
            return list(self._envelopes)

    def frames(self) -> list[Any]:
        """Every frame the client sent that was not an ack (should stay empty)."""
        with self._lock:
            return list(self._frames)

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> Ack:
        return await wait_until(lambda: self._ack(envelope_id), timeout,
                                lambda: self._describe(envelope_id))

    async def wait_for_connection(self, count: int = 1, timeout: float = 5.0) -> int:
        """Wait until ``count`` connections have been opened in total (hello sent)."""
        return await wait_until(lambda: self.connections_opened >= count and self.connected,
                                timeout, lambda: f"{self.connections_opened} connection(s)")

    async def close_all(self, app: web.Application | None = None) -> None:
        """Close every client socket (the emulator's shutdown hook)."""
        for ws in list(self._sockets):
            await ws.close()

    def ack_payloads(self) -> list[dict[str, Any]]:
        return [a.payload for a in self.acks() if a.payload]

    def _ack(self, envelope_id: str) -> Ack | None:
        with self._lock:
            return self._acks.get(envelope_id)

    def _describe(self, envelope_id: str) -> str:
        return (f"no ack for envelope {envelope_id}; {self.connections_opened} connection(s) "
                f"opened, {self.connected} open, {len(self.acks())} ack(s) received")

    def _require_thread(self) -> ServerThread:
        if self._thread is None or not self._thread.port:
            raise RuntimeError("start the SlackEmulator before using Socket Mode")
        return self._thread

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            ticket_ok = request.query.get("ticket") in self._tickets
            self._tickets.discard(request.query.get("ticket", ""))
        if not ticket_ok:
            raise web.HTTPUnauthorized(text="invalid or already used Socket Mode ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        await self._greet(ws)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                self._record(message.data)
        self._sockets.remove(ws)
        return ws

    async def _greet(self, ws: web.WebSocketResponse) -> None:
        self._sockets.append(ws)
        self.connections_opened += 1
        await ws.send_str(json.dumps({
            "type": "hello", "num_connections": self.connected,
            "debug_info": {"host": "applink-emulator", "build_number": 1,
                           "approximate_connection_time": 3600},
            "connection_info": {"app_id": APP_ID},
        }))
        pending, self._pending = self._pending, []
        for text in pending:
            await ws.send_str(text)

    def _record(self, text: str) -> None:
        try:
            frame = json.loads(text)
        except json.JSONDecodeError:
            frame = text
        with self._lock:
            if isinstance(frame, dict) and "envelope_id" in frame:
                ack = Ack(frame["envelope_id"], frame.get("payload"), time.monotonic())
                self._acks.setdefault(ack.envelope_id, ack)
            else:
                self._frames.append(frame)

    def _deliver(self, text: str) -> None:
        live = [ws for ws in self._sockets if not ws.closed]
        if not live:
            self._pending.append(text)
            return
        asyncio.ensure_future(live[-1].send_str(text))

    def _broadcast(self, text: str) -> None:
        for ws in self._sockets:
            if not ws.closed:
                asyncio.ensure_future(ws.send_str(text))


def _accepts_response(type: str, payload: dict[str, Any], given: bool | None) -> bool:
    if given is not None:
        return given
    if type == "slash_commands":
        return True
    return type == "interactive" and payload.get("type") in RESPONSE_PAYLOAD_TYPES
