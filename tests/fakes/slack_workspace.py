"""The in-memory Slack workspace behind the emulator: users, channels, messages, views, files.

It holds state and the primitives the Web API methods are built from (post, find, edit), and
renders objects the way Slack's API returns them. Anything the caller got wrong raises
:class:`ApiFailure` carrying Slack's error code; the HTTP layer turns it into
``{"ok": false, "error": ...}``.

By default the workspace is forgiving about ids it has not been told about: a channel id such
as ``C0123`` or a user id such as ``U0456`` springs into existence on first use, so a test only
configures what it cares about (archived channels, user groups, real names). With
``strict=True`` unknown ids fail as in Slack (``channel_not_found``, ``user_not_found``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

TEAM_ID = "T1"
TEAM_NAME = "Opsbot Test"
TEAM_DOMAIN = "opsbot-test"
APP_ID = "A1"
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
BOT_NAME = "opsbot"

CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]+$")
USER_ID = re.compile(r"^[UW][A-Z0-9]+$")


class ApiFailure(Exception):
    """A Slack API error code plus any extra fields Slack puts next to it."""

    def __init__(self, error: str, **extra: Any):
        super().__init__(error)
        self.error = error
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"ok": False, "error": self.error, **self.extra}


@dataclass
class User:
    id: str
    name: str
    real_name: str = ""
    is_bot: bool = False
    email: str = ""
    tz: str = "UTC"
    deleted: bool = False

    def to_api(self) -> dict[str, Any]:
        real = self.real_name or self.name
        return {
            "id": self.id, "team_id": TEAM_ID, "name": self.name, "real_name": real,
            "deleted": self.deleted, "is_bot": self.is_bot, "is_admin": False, "tz": self.tz,
            "profile": {"real_name": real, "display_name": self.name, "email": self.email},
        }


@dataclass
class Channel:
    id: str
    name: str
    is_private: bool = False
    is_archived: bool = False
    members: set[str] = field(default_factory=set)  # for users.conversations

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "is_channel": not self.is_private,
            "is_group": self.is_private, "is_im": self.id.startswith("D"),
            "is_private": self.is_private, "is_archived": self.is_archived, "is_member": True,
            "created": 1_600_000_000, "context_team_id": TEAM_ID,
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
        }


@dataclass(frozen=True)
class Edit:
    """A previous version of a message, kept when ``chat.update`` replaces it."""

    text: str
    blocks: list[Any]
    attachments: list[Any]
    at: float


@dataclass
class Message:
    """A message as it currently stands; ``edits`` holds the versions it replaced, oldest first."""

    channel: str
    ts: str
    text: str = ""
    user: str | None = BOT_USER_ID
    bot_id: str | None = BOT_ID
    thread_ts: str | None = None
    blocks: list[Any] = field(default_factory=list)
    attachments: list[Any] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    edits: list[Edit] = field(default_factory=list)
    deleted: bool = False
    stream: Stream | None = None  # set for a message made by chat.startStream

    @property
    def streaming(self) -> bool:
        return self.stream is not None and not self.stream.stopped

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    def to_api(self, reactions: dict[str, list[str]] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": "message", "ts": self.ts, "text": self.text,
                                "team": TEAM_ID}
        optional = {"user": self.user, "bot_id": self.bot_id, "thread_ts": self.thread_ts,
                    "blocks": self.blocks, "attachments": self.attachments,
                    "files": self.files, "metadata": self.metadata}
        body.update({k: v for k, v in optional.items() if v})
        if self.bot_id == BOT_ID:
            body["app_id"] = APP_ID
            body["bot_profile"] = {"id": BOT_ID, "app_id": APP_ID, "name": BOT_NAME,
                                   "team_id": TEAM_ID, "deleted": False}
        if self.edits:
            body["edited"] = {"user": self.user, "ts": self.ts}
        if reactions:
            body["reactions"] = [{"name": n, "users": u, "count": len(u)}
                                 for n, u in reactions.items()]
        return body


@dataclass
class Stream:
    """What ``chat.startStream``/``appendStream``/``stopStream`` put into one message: the
    chunks in arrival order, the plan's tasks (latest state by id, and every state each went
    through), and whether it was stopped. The message's ``text`` is its markdown so far."""

    recipient_user: str | None
    recipient_team: str | None
    task_display_mode: str | None
    chunks: list[dict[str, Any]] = field(default_factory=list)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_history: dict[str, list[str]] = field(default_factory=dict)
    plan_title: str = ""
    stopped: bool = False

    def apply(self, chunk: dict[str, Any]) -> str:
        """Take one chunk; returns the markdown it adds to the message."""
        self.chunks.append(chunk)
        kind = chunk["type"]
        if kind == "task_update":
            self.tasks[chunk["id"]] = chunk
            history = self.task_history.setdefault(chunk["id"], [])
            if not history or history[-1] != chunk["status"]:
                history.append(chunk["status"])
        elif kind == "plan_update":
            self.plan_title = chunk["title"]
        return chunk.get("text", "") if kind == "markdown_text" else ""


@dataclass
class AssistantThread:
    """An assistant thread's state as ``assistant.threads.*`` set it; ``statuses`` keeps every
    status in order (``""`` when cleared: by the app, or by Slack when the app replied)."""

    channel: str
    thread_ts: str
    statuses: list[str] = field(default_factory=list)
    prompts: list[dict[str, str]] = field(default_factory=list)
    prompts_title: str = ""
    title: str = ""

    @property
    def status(self) -> str:
        return self.statuses[-1] if self.statuses else ""


@dataclass
class Ephemeral:
    """A ``chat.postEphemeral`` (or ephemeral ``response_url``) message: only ``user`` sees it."""

    channel: str | None
    user: str | None
    text: str
    blocks: list[Any]
    thread_ts: str | None
    message_ts: str


@dataclass
class View:
    """A modal opened with ``views.open``; ``history`` holds the views it replaced."""

    id: str
    view: dict[str, Any]
    trigger_id: str
    hash: str
    external_id: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_api(self) -> dict[str, Any]:
        return {**self.view, "id": self.id, "team_id": TEAM_ID, "app_id": APP_ID,
                "bot_id": BOT_ID, "hash": self.hash, "state": {"values": {}},
                "external_id": self.external_id or ""}


@dataclass
class UploadedFile:
    """A file from the ``files.uploadV2`` flow: reserved, then uploaded, then shared."""

    id: str
    filename: str
    length: int
    content: bytes | None = None
    title: str = ""
    channel: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.filename, "title": self.title or self.filename,
                "size": len(self.content or b""), "user": BOT_USER_ID,
                "channels": [self.channel] if self.channel else []}


@dataclass
class ResponseUrl:
    """A ``response_url`` minted by the emulator, optionally bound to a channel/message."""

    id: str
    channel: str | None = None
    user: str | None = None
    message_ts: str | None = None
    thread_ts: str | None = None


@dataclass(frozen=True)
class WebhookPost:
    """One JSON body the bot posted to a ``response_url``."""

    hook_id: str
    body: dict[str, Any]
    at: float


class Workspace:
    """State of one emulated workspace. Not thread-safe: the emulator serialises access."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.users: dict[str, User] = {BOT_USER_ID: User(BOT_USER_ID, BOT_NAME, is_bot=True)}
        self.channels: dict[str, Channel] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.messages: dict[tuple[str, str], Message] = {}
        # keyed by (channel, ts), so the bot can react to inbound messages the test never seeded
        self.reactions: dict[tuple[str, str], dict[str, list[str]]] = {}
        self.ephemerals: list[Ephemeral] = []
        self.views: dict[str, View] = {}
        self.files: dict[str, UploadedFile] = {}
        self.response_urls: dict[str, ResponseUrl] = {}
        self.webhook_posts: list[WebhookPost] = []
        self.used_triggers: set[str] = set()
        self.home_views: dict[str, View] = {}  # views.publish, by user
        self.assistant_threads: dict[tuple[str, str], AssistantThread] = {}
        self.streaming = True  # False: an older workspace, chat.*Stream are unknown methods
        self.origin = ""  # http://127.0.0.1:<port>, set once the server is listening
        self._last_ts = 0
        self._serial = 0

    def next_ts(self) -> str:
        """A unique, increasing Slack timestamp (``seconds.micros``) close to the wall clock."""
        self._last_ts = max(self._last_ts + 1, time.time_ns() // 1000)
        return f"{self._last_ts // 1_000_000}.{self._last_ts % 1_000_000:06d}"

    def next_id(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{self._serial:08d}"

    def channel(self, ref: str | None) -> Channel:
        """Look up a channel by id or ``#name``; unknown ids appear unless the workspace is strict."""
        if not ref:
            raise ApiFailure("channel_not_found")
        if ref.startswith("#"):
            found = next((c for c in self.channels.values() if c.name == ref[1:]), None)
        else:
            found = self.channels.get(ref)
        if found is None and not self.strict and CHANNEL_ID.match(ref):
            found = self.channels.setdefault(ref, Channel(ref, ref.lower()))
        if found is None:
            raise ApiFailure("channel_not_found")
        return found

    def writable_channel(self, ref: str | None) -> Channel:
        channel = self.channel(ref)
        if channel.is_archived:
            raise ApiFailure("is_archived")
        return channel

    def user(self, user_id: str | None) -> User:
        found = self.users.get(user_id or "")
        if found is None and not self.strict and user_id and USER_ID.match(user_id):
            found = self.users.setdefault(user_id, User(user_id, user_id.lower()))
        if found is None:
            raise ApiFailure("user_not_found")
        return found

    def add(self, message: Message) -> Message:
        self.messages[(message.channel, message.ts)] = message
        if message.user == BOT_USER_ID and message.thread_ts:
            self.replied(message.channel, message.thread_ts)
        return message

    def assistant_thread(self, channel: str, thread_ts: str) -> AssistantThread:
        key = (channel, thread_ts)
        return self.assistant_threads.setdefault(key, AssistantThread(channel, thread_ts))

    def replied(self, channel: str, thread_ts: str) -> None:
        """Slack clears an assistant thread's status when the app replies in it."""
        thread = self.assistant_threads.get((channel, thread_ts))
        if thread is not None and thread.status:
            thread.statuses.append("")

    def message(self, channel: str, ts: str | None) -> Message:
        found = self.messages.get((channel, ts or ""))
        if found is None or found.deleted:
            raise ApiFailure("message_not_found")
        return found

    def live(self, channel: str) -> list[Message]:
        """Messages currently visible in a channel, oldest first."""
        found = [m for (c, _), m in self.messages.items() if c == channel and not m.deleted]
        return sorted(found, key=lambda m: float(m.ts))

    def replies(self, channel: str, thread_ts: str) -> list[Message]:
        return [m for m in self.live(channel) if m.thread_ts == thread_ts and m.ts != thread_ts]

    def thread(self, channel: str, ts: str) -> list[Message]:
        """The parent (when known) followed by its replies, like ``conversations.replies``."""
        parent = self.messages.get((channel, ts))
        head = [parent] if parent is not None and not parent.deleted else []
        return head + self.replies(channel, ts)

    def edit(self, message: Message, text: str, blocks: list[Any], attachments: list[Any]) -> None:
        message.edits.append(Edit(message.text, message.blocks, message.attachments,
                                  time.monotonic()))
        message.text, message.blocks, message.attachments = text, blocks, attachments

    def claim_trigger(self, trigger_id: str | None, max_age: float = 3.0) -> None:
        """A trigger_id opens one view, within 3 s of the click that produced it."""
        if not trigger_id:
            raise ApiFailure("invalid_trigger_id")
        if trigger_id in self.used_triggers:
            raise ApiFailure("exchanged_trigger_id")
        issued_ms = trigger_id.split(".", 1)[0]  # payloads.trigger_id() puts epoch ms first
        if len(issued_ms) == 13 and issued_ms.isdigit() and time.time() * 1000 - int(
            issued_ms
        ) > max_age * 1000:
            raise ApiFailure("expired_trigger_id")
        self.used_triggers.add(trigger_id)
