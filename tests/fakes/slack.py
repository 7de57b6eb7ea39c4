"""A Slack Web API emulator on loopback, for tests that run the real slack_sdk / slack_bolt.

Point ``AsyncWebClient(base_url=slack.base_url, token=BOT_TOKEN)`` (or ``OPSBOT_SLACK_API_URL``)
at it. It speaks Slack's HTTP protocol: form or JSON bodies, bearer tokens, Slack-shaped
responses and errors (``invalid_auth``, ``msg_too_long``, ``invalid_blocks`` with a useful
``errors`` list, ``message_not_found``, ``is_archived``, 429 ``ratelimited`` with
``Retry-After``), over an in-memory workspace (see :mod:`tests.fakes.slack_workspace`). It also
serves ``response_url`` webhooks, the ``files.uploadV2`` upload URL and the Socket Mode link.

Usage::

    with SlackEmulator() as slack:                    # or the ``slack_emulator`` fixture
        client = AsyncWebClient(base_url=slack.base_url, token=BOT_TOKEN)
        await client.chat_postMessage(channel="C1", text="hi")
        slack.rate_limit("chat.update", times=1, retry_after=1)
        await slack.wait_for(lambda: slack.messages("C1"))
        assert "hunter2" not in slack.all_text()
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

from tests.fakes.payloads import SIGNING_SECRET
from tests.fakes.server import Emulator, strings_in
from tests.fakes.slack_ai import AI_METHODS
from tests.fakes.slack_blocks import MESSAGE_MAX_BLOCKS, block_errors, error_fields
from tests.fakes.slack_methods import METHODS, Params, apply_response
from tests.fakes.slack_workspace import (
    ApiFailure,
    AssistantThread,
    Channel,
    Ephemeral,
    Message,
    ResponseUrl,
    UploadedFile,
    User,
    View,
    WebhookPost,
    Workspace,
)
from tests.fakes.socket_mode import SocketModeServer

BOT_TOKEN = "xoxb-1-opsbot-test-token"
APP_TOKEN = "xapp-1-A1-opsbot-test-token"
CONNECTIONS_OPEN = "apps.connections.open"
RESPONSE_URL_USES = 5  # Slack: a response_url works up to five times
HOLD_LIMIT_S = 60  # a held call is answered after this even if the test never releases it
ALL_METHODS = {**METHODS, **AI_METHODS}


@dataclass(frozen=True)
class Call:
    """One Web API request as received, and what the emulator answered."""

    method: str
    http_method: str
    headers: dict[str, str]
    params: dict[str, Any]
    raw_body: bytes
    at: float
    status: int
    response: dict[str, Any]
    injected: bool = False  # the answer came from rate_limit()/fail(), not from the method

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        return self.response.get("error")


@dataclass
class _Fault:
    kind: str  # "ratelimited" | "fail" | "delay" | "hold"
    remaining: int | None
    error: str = ""
    seconds: float = 0.0
    gate: threading.Event | None = None  # "hold": answered once the test sets it

    @property
    def passing(self) -> bool:
        """It only makes the call wait; the answer is the real one."""
        return self.kind in ("delay", "hold")


class SlackEmulator(Emulator):
    """Slack's Web API, response_url webhooks, file uploads and Socket Mode on one port."""

    def __init__(self, bot_token: str = BOT_TOKEN, app_token: str = APP_TOKEN,
                 strict: bool = False):
        self.bot_token = bot_token
        self.app_token = app_token
        self.workspace = Workspace(strict=strict)
        self.socket = SocketModeServer()
        self._lock = threading.RLock()
        self._calls: list[Call] = []
        self._uploads: list[bytes] = []
        self._faults: dict[str, list[_Fault]] = {}
        self._held: Counter[str] = Counter()  # calls waiting out a delay or hold now, by method
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([
            web.route("*", "/api/{method}", self._api),
            web.post("/webhook/{hook}", self._webhook),
            web.post("/upload/v1/{file_id}", self._upload),
            *self.socket.routes(),
        ])
        app.on_shutdown.append(self.socket.close_all)
        super().__init__(app, "slack-emulator")

    # lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        super().start()
        self.workspace.origin = self.origin
        self.socket.attach(self._thread)
        return self

    @property
    def base_url(self) -> str:
        """What ``AsyncWebClient(base_url=...)`` and ``OPSBOT_SLACK_API_URL`` expect."""
        return f"{self.origin}/api/"

    def env(self, socket_mode: bool = False) -> dict[str, str]:
        """opsbot's environment for talking to this emulator (DESIGN §6 names)."""
        env = {"OPSBOT_SLACK_API_URL": self.base_url, "SLACK_BOT_TOKEN": self.bot_token,
               "SLACK_SIGNING_SECRET": SIGNING_SECRET}
        return {**env, "SLACK_APP_TOKEN": self.app_token} if socket_mode else env

    # workspace set-up --------------------------------------------------------------------

    def add_user(self, user_id: str, name: str, real_name: str = "", email: str = "",
                 is_bot: bool = False) -> None:
        with self._lock:
            self.workspace.users[user_id] = User(user_id, name, real_name, is_bot, email)

    def add_channel(self, channel_id: str, name: str, archived: bool = False,
                    private: bool = False, members: list[str] = ()) -> None:
        with self._lock:
            self.workspace.channels[channel_id] = Channel(channel_id, name, private, archived,
                                                          set(members))

    def without_streaming(self) -> None:
        """Behave like a workspace without Agents & AI Apps: ``chat.*Stream`` are unknown."""
        with self._lock:
            self.workspace.streaming = False

    def set_usergroup(self, group_id: str, users: list[str]) -> None:
        """Members returned by ``usergroups.users.list`` for ``group_id`` (e.g. ``S0SRE``)."""
        with self._lock:
            self.workspace.usergroups[group_id] = list(users)

    def add_message(self, channel: str, text: str, *, user: str | None = "U1",
                    ts: str | None = None, thread_ts: str | None = None,
                    bot_id: str | None = None, blocks: list[Any] | None = None,
                    attachments: list[Any] | None = None) -> str:
        """Put a message someone else wrote into the workspace; returns its ts."""
        with self._lock:
            try:
                channel_id = self.workspace.channel(channel).id
            except ApiFailure:
                raise ValueError(f"The emulated workspace has no channel {channel!r}; "
                                 "add_channel() it first.") from None
            ts = ts or self.workspace.next_ts()
            self.workspace.add(Message(channel_id, ts, text, user, bot_id, thread_ts,
                                       blocks or [], attachments or []))
            return ts

    def response_url(self, channel: str | None = None, user: str | None = None,
                     message_ts: str | None = None, thread_ts: str | None = None) -> str:
        """Mint a ``response_url``; bound to a message, ``replace_original`` edits it."""
        with self._lock:
            hook = ResponseUrl(self.workspace.next_id("H"), channel, user, message_ts, thread_ts)
            self.workspace.response_urls[hook.id] = hook
        return f"{self.origin}/webhook/{hook.id}"

    # fault injection ---------------------------------------------------------------------

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """The next ``times`` calls of ``method`` get HTTP 429 with ``Retry-After``."""
        self._add_fault(method, _Fault("ratelimited", times, seconds=retry_after))

    def fail(self, method: str, error: str, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer ``{"ok": false, "error": error}``."""
        self._add_fault(method, _Fault("fail", times, error=error))

    def delay(self, method: str, seconds: float, times: int | None = None) -> None:
        """Hold calls of ``method`` for ``seconds`` before answering (``times=None``: always)."""
        self._add_fault(method, _Fault("delay", times, seconds=seconds))

    def hold(self, method: str, times: int = 1) -> threading.Event:
        """The next ``times`` calls of ``method`` wait, received but neither applied nor
        answered, until the returned event is set (at most :data:`HOLD_LIMIT_S`)."""
        gate = threading.Event()
        self._add_fault(method, _Fault("hold", times, gate=gate))
        return gate

    def held(self, method: str) -> int:
        """How many calls of ``method`` a delay or hold keeps waiting right now (received, not
        yet answered nor applied): the bot is inside that call."""
        with self._lock:
            return self._held[method]

    @contextlib.contextmanager
    def _holding(self, method: str) -> Iterator[None]:
        with self._lock:
            self._held[method] += 1
        try:
            yield
        finally:
            with self._lock:
                self._held[method] -= 1

    def _add_fault(self, method: str, fault: _Fault) -> None:
        if method not in ALL_METHODS and method != CONNECTIONS_OPEN:
            raise ValueError(f"The Slack emulator does not implement `{method}`; "
                             f"it implements: {', '.join(sorted(ALL_METHODS))}.")
        with self._lock:
            self._faults.setdefault(method, []).append(fault)

    # inspection --------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def calls_from(self, index: int) -> list[Call]:
        """The calls received after the first ``index`` ones (a poller's cheap next look)."""
        with self._lock:
            return self._calls[index:]

    def messages(self, channel: str, thread_ts: str | None = None) -> list[Message]:
        """Current state of a channel's messages (all of them, or the replies in one thread)."""
        with self._lock:
            found = (self.workspace.live(channel) if thread_ts is None
                     else self.workspace.replies(channel, thread_ts))
            return copy.deepcopy(found)

    def message(self, channel: str, ts: str) -> Message | None:
        with self._lock:
            found = self.workspace.messages.get((channel, ts))
            return copy.deepcopy(found) if found and not found.deleted else None

    def thread(self, channel: str, ts: str) -> list[Message]:
        """The thread's parent (if the workspace knows it) followed by its replies."""
        with self._lock:
            return copy.deepcopy(self.workspace.thread(channel, ts))

    def ephemerals(self, user: str | None = None) -> list[Ephemeral]:
        with self._lock:
            return [copy.deepcopy(e) for e in self.workspace.ephemerals
                    if user is None or e.user == user]

    def reactions(self, channel: str, ts: str) -> list[str]:
        """Reaction names the bot currently has on a message."""
        with self._lock:
            return sorted(self.workspace.reactions.get((channel, ts), {}))

    def views(self) -> list[View]:
        with self._lock:
            return copy.deepcopy(list(self.workspace.views.values()))

    def home(self, user: str) -> View | None:
        """The Home tab last published for ``user`` (``views.publish``)."""
        with self._lock:
            return copy.deepcopy(self.workspace.home_views.get(user))

    def assistant_thread(self, channel: str, thread_ts: str) -> AssistantThread | None:
        """Status, suggested prompts and title the bot set on an assistant thread."""
        with self._lock:
            return copy.deepcopy(self.workspace.assistant_threads.get((channel, thread_ts)))

    def streams(self, channel: str, thread_ts: str | None = None) -> list[Message]:
        """Messages made by ``chat.startStream`` (in one thread, or the whole channel)."""
        return [m for m in self.messages(channel, thread_ts) if m.stream is not None]

    def files(self) -> list[UploadedFile]:
        with self._lock:
            return copy.deepcopy(list(self.workspace.files.values()))

    def responses(self, url: str | None = None) -> list[WebhookPost]:
        """Bodies posted to response_urls (all, or those posted to one URL)."""
        hook = url.rstrip("/").rsplit("/", 1)[-1] if url else None
        with self._lock:
            return [p for p in self.workspace.webhook_posts if hook is None or p.hook_id == hook]

    def all_text(self) -> str:
        """Every string the bot sent to Slack, one per line: for canary-secret assertions."""
        with self._lock:
            sources: list[Any] = [{k: v for k, v in c.params.items() if k != "token"}
                                  for c in self._calls]
            sources += [p.body for p in self.workspace.webhook_posts]
            sources += [b.decode("utf-8", "replace") for b in self._uploads]
        sources += self.socket.ack_payloads()
        return "\n".join(s for source in sources for s in strings_in(source))

    def refused_layouts(self) -> list[Call]:
        """Calls refused for their blocks, chunks or view (not by injected faults): opsbot
        must never send a layout Slack or slack_sdk's models would refuse."""
        refusals = ("invalid_blocks", "invalid_chunks", "invalid_blocks_format")
        return [c for c in self.calls() if not c.injected and (
            c.error in refusals or (c.method.startswith("views.") and c.error == "invalid_arguments"))]

    def describe(self) -> str:
        """A one-line summary of the calls so far, for assertion messages."""
        counts = Counter(f"{c.method}({c.error or 'ok'})" for c in self.calls())
        seen = ", ".join(f"{k}×{n}" for k, n in counts.items()) or "nothing"
        return f"the Slack emulator saw: {seen}"

    # HTTP handlers (run on the emulator's loop) ------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        raw = await request.read()
        params, bad_body = _parse_params(request, raw)
        faults = self._take_faults(method)
        for fault in faults:
            if fault.kind == "delay":
                with self._holding(method):
                    await asyncio.sleep(fault.seconds)
            elif fault.kind == "hold" and fault.gate is not None:
                with self._holding(method):
                    await asyncio.to_thread(fault.gate.wait, HOLD_LIMIT_S)
        status, body, headers = self._answer(method, request, params, bad_body, faults)
        injected = any(not f.passing for f in faults)
        self._record(Call(method, request.method, dict(request.headers), params, raw,
                          time.monotonic(), status, body, injected))
        return web.json_response(body, status=status, headers=headers)

    def _answer(self, method: str, request: web.Request, params: dict[str, Any],
                bad_body: bool, faults: list[_Fault]) -> tuple[int, dict[str, Any], dict]:
        for fault in faults:
            if fault.kind == "ratelimited":
                retry = {"Retry-After": str(int(fault.seconds))}
                return 429, {"ok": False, "error": "ratelimited"}, retry
            if fault.kind == "fail":
                return 200, {"ok": False, "error": fault.error}, {}
        if bad_body:
            return 200, {"ok": False, "error": "invalid_json"}, {}
        try:
            return 200, self._dispatch(method, _token(request, params), Params(params)), {}
        except ApiFailure as failure:
            return 200, failure.body(), {}

    def _dispatch(self, method: str, token: str | None, params: Params) -> dict[str, Any]:
        self._authenticate(method, token)
        if method == CONNECTIONS_OPEN:
            return {"ok": True, "url": self.socket.issue_url()}
        handler = ALL_METHODS.get(method)
        if handler is None:
            raise ApiFailure("unknown_method")
        with self._lock:
            return handler(self.workspace, params)

    def _authenticate(self, method: str, token: str | None) -> None:
        expected = self.app_token if method == CONNECTIONS_OPEN else self.bot_token
        if not token:
            raise ApiFailure("not_authed")
        if token in (self.app_token, self.bot_token) and token != expected:
            raise ApiFailure("not_allowed_token_type")
        if token != expected:
            raise ApiFailure("invalid_auth")

    def _take_faults(self, method: str) -> list[_Fault]:
        """Active delays and holds, plus at most one replacing fault (rate limit or failure)."""
        with self._lock:
            queue = self._faults.get(method, [])
            taken = [f for f in queue if f.passing]
            replacing = next((f for f in queue if not f.passing), None)
            taken += [replacing] if replacing else []
            for fault in taken:
                fault.remaining = None if fault.remaining is None else fault.remaining - 1
            self._faults[method] = [f for f in queue if f.remaining is None or f.remaining > 0]
            return taken

    def _record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    async def _webhook(self, request: web.Request) -> web.Response:
        hook_id = request.match_info["hook"]
        try:
            body = json.loads(await request.read())
        except json.JSONDecodeError:
            return web.Response(status=400, text="invalid_payload")
        if not isinstance(body, dict):
            return web.Response(status=400, text="invalid_payload")
        with self._lock:
            return self._respond_via(hook_id, body)

    def _respond_via(self, hook_id: str, body: dict[str, Any]) -> web.Response:
        hook = self.workspace.response_urls.get(hook_id)
        if hook is None:
            return web.Response(status=404, text="no_service")
        posts = [p for p in self.workspace.webhook_posts if p.hook_id == hook_id]
        if len(posts) >= RESPONSE_URL_USES:
            return web.Response(status=404, text="used_url")
        errors = block_errors(body.get("blocks", []), MESSAGE_MAX_BLOCKS)
        if errors:
            return web.json_response({"ok": False, "error": "invalid_blocks",
                                      **error_fields(errors)}, status=400)
        self.workspace.webhook_posts.append(WebhookPost(hook_id, body, time.monotonic()))
        apply_response(self.workspace, hook, body)
        return web.Response(text="ok")

    async def _upload(self, request: web.Request) -> web.Response:
        data = await request.read()
        with self._lock:
            file = self.workspace.files.get(request.match_info["file_id"])
            if file is None:
                return web.Response(status=404, text="file_not_found")
            file.content = data
            self._uploads.append(data)
        return web.Response(text=f"OK - {len(data)}")


def _parse_params(request: web.Request, raw: bytes) -> tuple[dict[str, Any], bool]:
    """Query string merged with a form or JSON body, like Slack accepts; flags bad JSON."""
    params: dict[str, Any] = dict(request.query)
    if not raw:
        return params, False
    if request.content_type == "application/json":
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return params, True
        if not isinstance(body, dict):
            return params, True
        return {**params, **body}, False
    if request.content_type == "application/x-www-form-urlencoded":
        params.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    return params, False


def _token(request: web.Request, params: dict[str, Any]) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth.removeprefix("Bearer ").strip()
    token = params.get("token")
    return str(token) if token else None


@pytest.fixture
def slack_emulator() -> Iterator[SlackEmulator]:
    """A running Slack emulator for one test (bot token ``BOT_TOKEN``, app token ``APP_TOKEN``).

    At the end it checks that nothing the test's bot sent was refused for its layout: every
    block, chunk and view opsbot sends passes Slack's limits and slack_sdk's models."""
    with SlackEmulator() as slack:
        yield slack
        refused = [(c.method, c.response.get("errors") or c.response.get("response_metadata"))
                   for c in slack.refused_layouts()]
        assert not refused, f"Slack refused layouts opsbot sent: {refused}"
