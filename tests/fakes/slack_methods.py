"""Slack Web API methods implemented over the in-memory :class:`Workspace`.

Each handler takes the workspace and the request's merged parameters (query string, form or
JSON body) and returns Slack's response body, or raises :class:`ApiFailure` with Slack's error
code. ``METHODS`` is the explicit table the emulator dispatches on; a method missing from it
answers ``unknown_method``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from tests.fakes.slack_blocks import MESSAGE_MAX_BLOCKS, VIEW_MAX_BLOCKS, block_errors, error_fields
from tests.fakes.slack_workspace import (
    APP_ID,
    BOT_ID,
    BOT_NAME,
    BOT_USER_ID,
    TEAM_DOMAIN,
    TEAM_ID,
    TEAM_NAME,
    ApiFailure,
    Ephemeral,
    Message,
    ResponseUrl,
    UploadedFile,
    View,
    Workspace,
)

POST_TEXT_LIMIT = 40_000  # Slack refuses (rather than truncates) beyond this
UPDATE_TEXT_LIMIT = 4_000  # chat.update: "text field cannot exceed 4,000 characters"
VIEW_TITLE = 24

Handler = Callable[[Workspace, "Params"], dict[str, Any]]


class Params:
    """Typed access to one request's parameters, with Slack's errors for bad values."""

    def __init__(self, raw: dict[str, Any]):
        self.raw = raw

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    def str(self, key: str) -> str | None:
        value = self.raw.get(key)
        return None if value is None else str(value)

    def required(self, key: str, error: str = "invalid_arguments") -> str:
        value = self.str(key)
        if not value:
            raise ApiFailure(error, response_metadata={"messages": [f"[ERROR] missing {key}"]})
        return value

    def json(self, key: str, error: str) -> Any:
        """A field that may arrive as JSON text (form bodies) or as a value (JSON bodies)."""
        value = self.raw.get(key)
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ApiFailure(error) from None


def content(p: Params, text_limit: int, old: Message | None = None) -> tuple[str, list, list]:
    """text/blocks/attachments of a post or update, validated like Slack does."""
    text = p.str("text") if p.str("text") is not None or old is None else old.text
    blocks = _list(p, "blocks", "invalid_blocks_format", old.blocks if old else [])
    attachments = _list(p, "attachments", "invalid_attachments", old.attachments if old else [])
    if not (text or blocks or attachments):
        raise ApiFailure("no_text")
    if text and len(text) > text_limit:
        raise ApiFailure("msg_too_long")
    errors = block_errors(blocks, MESSAGE_MAX_BLOCKS)
    if errors:
        raise ApiFailure("invalid_blocks", **error_fields(errors))
    return text or "", blocks, attachments


def _list(p: Params, key: str, error: str, default: list) -> list:
    if key not in p:
        return default
    value = p.json(key, error)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiFailure(error)
    return value


def auth_test(ws: Workspace, p: Params) -> dict[str, Any]:
    return {"ok": True, "url": f"https://{TEAM_DOMAIN}.slack.com/", "team": TEAM_NAME,
            "user": BOT_NAME, "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID,
            "app_id": APP_ID, "is_enterprise_install": False}


def chat_post_message(ws: Workspace, p: Params) -> dict[str, Any]:
    channel = ws.writable_channel(p.str("channel"))
    text, blocks, attachments = content(p, POST_TEXT_LIMIT)
    message = ws.add(Message(channel.id, ws.next_ts(), text, thread_ts=p.str("thread_ts"),
                             blocks=blocks, attachments=attachments,
                             metadata=p.json("metadata", "invalid_metadata_format")))
    return {"ok": True, "channel": channel.id, "ts": message.ts, "message": message.to_api()}


def chat_update(ws: Workspace, p: Params) -> dict[str, Any]:
    channel = ws.writable_channel(p.str("channel"))
    message = ws.message(channel.id, p.str("ts"))
    if message.user != BOT_USER_ID:
        raise ApiFailure("cant_update_message")
    text, blocks, attachments = content(p, UPDATE_TEXT_LIMIT, old=message)
    ws.edit(message, text, blocks, attachments)
    if "metadata" in p:
        message.metadata = p.json("metadata", "invalid_metadata_format")
    return {"ok": True, "channel": channel.id, "ts": message.ts, "text": text,
            "message": message.to_api()}


def chat_post_ephemeral(ws: Workspace, p: Params) -> dict[str, Any]:
    channel = ws.writable_channel(p.str("channel"))
    user = ws.user(p.required("user", "user_not_found"))
    text, blocks, _ = content(p, POST_TEXT_LIMIT)
    ts = ws.next_ts()
    ws.ephemerals.append(Ephemeral(channel.id, user.id, text, blocks, p.str("thread_ts"), ts))
    return {"ok": True, "message_ts": ts}


def chat_delete(ws: Workspace, p: Params) -> dict[str, Any]:
    channel = ws.channel(p.str("channel"))
    message = ws.message(channel.id, p.str("ts"))
    if message.user != BOT_USER_ID:
        raise ApiFailure("cant_delete_message")
    message.deleted = True
    return {"ok": True, "channel": channel.id, "ts": message.ts}


def _reaction_target(ws: Workspace, p: Params) -> tuple[dict[str, list[str]], str]:
    channel = ws.channel(p.str("channel"))
    ts = p.required("timestamp", "no_item_specified")
    if ws.strict:
        ws.message(channel.id, ts)
    name = p.required("name", "invalid_name")
    if ":" in name or " " in name:
        raise ApiFailure("invalid_name")
    return ws.reactions.setdefault((channel.id, ts), {}), name


def reactions_add(ws: Workspace, p: Params) -> dict[str, Any]:
    reactions, name = _reaction_target(ws, p)
    users = reactions.setdefault(name, [])
    if BOT_USER_ID in users:
        raise ApiFailure("already_reacted")
    users.append(BOT_USER_ID)
    return {"ok": True}


def reactions_remove(ws: Workspace, p: Params) -> dict[str, Any]:
    reactions, name = _reaction_target(ws, p)
    if BOT_USER_ID not in reactions.get(name, []):
        raise ApiFailure("no_reaction")
    reactions[name].remove(BOT_USER_ID)
    if not reactions[name]:
        del reactions[name]
    return {"ok": True}


def users_info(ws: Workspace, p: Params) -> dict[str, Any]:
    return {"ok": True, "user": ws.user(p.required("user", "user_not_found")).to_api()}


def usergroups_users_list(ws: Workspace, p: Params) -> dict[str, Any]:
    group = p.required("usergroup", "no_such_subteam")
    if group not in ws.usergroups:
        raise ApiFailure("no_such_subteam")
    return {"ok": True, "users": list(ws.usergroups[group])}


def conversations_info(ws: Workspace, p: Params) -> dict[str, Any]:
    return {"ok": True, "channel": ws.channel(p.str("channel")).to_api()}


def conversations_replies(ws: Workspace, p: Params) -> dict[str, Any]:
    channel = ws.channel(p.str("channel"))
    ts = p.required("ts", "thread_not_found")
    thread = ws.thread(channel.id, ts)
    if not thread:
        raise ApiFailure("thread_not_found")
    rendered = [m.to_api(ws.reactions.get((channel.id, m.ts))) for m in thread]
    replies = ws.replies(channel.id, ts)
    if thread[0].ts == ts and replies:
        rendered[0].update(thread_ts=ts, reply_count=len(replies), latest_reply=replies[-1].ts,
                           reply_users=sorted({r.user or r.bot_id or "" for r in replies}))
    return {"ok": True, "messages": rendered, "has_more": False}


def _valid_view(p: Params) -> dict[str, Any]:
    view = p.json("view", "invalid_arguments")
    if not isinstance(view, dict) or view.get("type") not in ("modal", "home"):
        raise ApiFailure("invalid_arguments",
                         response_metadata={"messages": ["[ERROR] view must be a modal or home"]})
    title = (view.get("title") or {}).get("text", "")
    errors = block_errors(view.get("blocks", []), VIEW_MAX_BLOCKS)
    if view["type"] == "modal" and not 0 < len(title) <= VIEW_TITLE:
        errors.append(f"must be less than {VIEW_TITLE + 1} characters "
                      "[json-pointer:/view/title/text]")
    if errors:
        raise ApiFailure("invalid_arguments",
                         response_metadata={"messages": [f"[ERROR] {e}" for e in errors]})
    return view


def view_hash(view: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(view, sort_keys=True).encode()).hexdigest()[:16]


def views_open(ws: Workspace, p: Params) -> dict[str, Any]:
    ws.claim_trigger(p.str("trigger_id"))
    view = _valid_view(p)
    opened = View(ws.next_id("V"), view, p.str("trigger_id") or "", view_hash(view),
                  external_id=view.get("external_id"))
    ws.views[opened.id] = opened
    return {"ok": True, "view": opened.to_api()}


def views_update(ws: Workspace, p: Params) -> dict[str, Any]:
    view_id, external_id = p.str("view_id"), p.str("external_id")
    found = ws.views.get(view_id or "") or next(
        (v for v in ws.views.values() if external_id and v.external_id == external_id), None)
    if found is None:
        raise ApiFailure("not_found")
    if p.str("hash") and p.str("hash") != found.hash:
        raise ApiFailure("hash_conflict")
    view = _valid_view(p)
    found.history.append(found.view)
    found.view, found.hash = view, view_hash(view)
    return {"ok": True, "view": found.to_api()}


def files_get_upload_url_external(ws: Workspace, p: Params) -> dict[str, Any]:
    filename = p.required("filename")
    length = p.required("length")
    if not length.isdigit():
        raise ApiFailure("invalid_arguments")
    file = UploadedFile(ws.next_id("F"), filename, int(length))
    ws.files[file.id] = file
    return {"ok": True, "upload_url": f"{ws.origin}/upload/v1/{file.id}", "file_id": file.id}


def files_complete_upload_external(ws: Workspace, p: Params) -> dict[str, Any]:
    items = p.json("files", "invalid_arguments")
    if not isinstance(items, list) or not items:
        raise ApiFailure("invalid_arguments")
    files = [_uploaded(ws, item) for item in items]
    channel_ref = p.str("channel_id")
    channel = ws.writable_channel(channel_ref) if channel_ref else None
    for file in files:
        file.channel, file.thread_ts = channel and channel.id, p.str("thread_ts")
        file.initial_comment = p.str("initial_comment")
    if channel is not None:
        ws.add(Message(channel.id, ws.next_ts(), p.str("initial_comment") or "",
                       thread_ts=p.str("thread_ts"), files=[f.to_api() for f in files]))
    return {"ok": True, "files": [f.to_api() for f in files]}


def _uploaded(ws: Workspace, item: Any) -> UploadedFile:
    file = ws.files.get(item.get("id", "")) if isinstance(item, dict) else None
    if file is None or file.content is None:
        raise ApiFailure("file_not_found")
    file.title = item.get("title") or file.filename
    return file


def apply_response(ws: Workspace, hook: ResponseUrl, body: dict[str, Any]) -> None:
    """What Slack does with a response_url post: replace/delete the original, or post anew."""
    original = ws.messages.get((hook.channel or "", hook.message_ts or ""))
    text, blocks = body.get("text", ""), body.get("blocks", [])
    if original is not None and body.get("delete_original"):
        original.deleted = True
    elif original is not None and body.get("replace_original"):
        ws.edit(original, text, blocks, body.get("attachments", []))
    elif body.get("response_type") == "in_channel" and hook.channel:
        thread = body.get("thread_ts") or hook.thread_ts
        ws.add(Message(ws.channel(hook.channel).id, ws.next_ts(), text, thread_ts=thread,
                       blocks=blocks))
    else:
        ws.ephemerals.append(Ephemeral(hook.channel, hook.user, text, blocks, hook.thread_ts,
                                       ws.next_ts()))


METHODS: dict[str, Handler] = {
    "auth.test": auth_test,
    "chat.postMessage": chat_post_message,
    "chat.update": chat_update,
    "chat.postEphemeral": chat_post_ephemeral,
    "chat.delete": chat_delete,
    "reactions.add": reactions_add,
    "reactions.remove": reactions_remove,
    "users.info": users_info,
    "usergroups.users.list": usergroups_users_list,
    "conversations.info": conversations_info,
    "conversations.replies": conversations_replies,
    "views.open": views_open,
    "views.update": views_update,
    "files.getUploadURLExternal": files_get_upload_url_external,
    "files.completeUploadExternal": files_complete_upload_external,
}
