"""The Web API methods of Slack's Agents & AI Apps surface, and App Home, for the emulator.

* ``assistant.threads.setStatus`` / ``setSuggestedPrompts`` / ``setTitle``: recorded per
  thread (:class:`~tests.fakes.slack_workspace.AssistantThread`); a status is cleared when the
  app replies in the thread, as Slack does.
* ``chat.startStream`` / ``appendStream`` / ``stopStream``: one message whose text grows with
  every ``markdown_text`` chunk, whose plan tasks change with ``task_update`` chunks, and which
  takes its final ``blocks`` when stopped. Chunks are checked against slack_sdk's own chunk
  models (known type, every field kept by the model, a task status Slack accepts). A
  workspace with ``streaming = False`` (an older one) answers ``unknown_method``.
* ``views.publish``: a Home tab per user; ``users.conversations``: the channels a user is in.

Error codes follow Slack's where it documents them; where it does not (streaming to a channel
without a recipient), the emulator answers ``invalid_arguments`` with a message saying why.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.models.messages.chunk import Chunk

from tests.fakes.slack_blocks import MESSAGE_MAX_BLOCKS, VIEW_MAX_BLOCKS, block_errors, error_fields
from tests.fakes.slack_methods import Handler, Params, view_hash
from tests.fakes.slack_workspace import (
    BOT_USER_ID,
    ApiFailure,
    Message,
    Stream,
    View,
    Workspace,
)

MARKDOWN_TEXT = 12_000
TASK_STATUSES = ("pending", "in_progress", "complete", "error")
DISPLAY_MODES = (None, "timeline", "plan")
MAX_PROMPTS = 4
MAX_LOADING_MESSAGES = 10


def _invalid(why: str) -> ApiFailure:
    return ApiFailure("invalid_arguments", response_metadata={"messages": [f"[ERROR] {why}"]})


def _chunks(p: Params) -> list[dict[str, Any]]:
    """``markdown_text`` (as a chunk) followed by ``chunks``, each checked like Slack does."""
    found = []
    text = p.str("markdown_text")
    if text:
        found.append({"type": "markdown_text", "text": text})
    raw = p.json("chunks", "invalid_chunks") if "chunks" in p else []
    if not isinstance(raw, list):
        raise ApiFailure("invalid_chunks")
    found += raw
    for i, chunk in enumerate(found):
        problem = _chunk_problem(chunk)
        if problem:
            raise ApiFailure("invalid_chunks", response_metadata={
                "messages": [f"[ERROR] {problem} [json-pointer:/chunks/{i}]"]})
    return found


def _chunk_problem(chunk: Any) -> str:
    if not isinstance(chunk, dict):
        return "must provide an object"
    parsed = Chunk.parse(dict(chunk))
    if parsed is None:
        return f"unknown chunk type `{chunk.get('type')}`"
    if parsed.to_dict() != chunk:
        return "has fields slack_sdk's chunk model does not know"
    if chunk["type"] == "task_update" and chunk.get("status") not in TASK_STATUSES:
        return f"status must be one of {', '.join(TASK_STATUSES)}"
    if chunk["type"] == "markdown_text" and not 0 < len(chunk.get("text") or "") <= MARKDOWN_TEXT:
        return f"text must be 1 to {MARKDOWN_TEXT} characters"
    return ""


def _streaming(ws: Workspace) -> None:
    if not ws.streaming:
        raise ApiFailure("unknown_method")


def _apply(ws: Workspace, message: Message, chunks: list[dict[str, Any]]) -> None:
    assert message.stream is not None
    added = "".join(message.stream.apply(c) for c in chunks)
    if added:
        ws.edit(message, message.text + added, message.blocks, message.attachments)


def chat_start_stream(ws: Workspace, p: Params) -> dict[str, Any]:
    _streaming(ws)
    channel = ws.writable_channel(p.str("channel"))
    thread_ts = p.required("thread_ts")
    recipient, team = p.str("recipient_user_id"), p.str("recipient_team_id")
    if not channel.id.startswith("D") and not (recipient and team):
        raise _invalid("recipient_user_id and recipient_team_id are required to stream "
                       "into a channel")
    if p.str("task_display_mode") not in DISPLAY_MODES:
        raise _invalid("task_display_mode must be timeline or plan")
    chunks = _chunks(p)
    stream = Stream(recipient, team, p.str("task_display_mode"))
    message = ws.add(Message(channel.id, ws.next_ts(), "", thread_ts=thread_ts, stream=stream))
    _apply(ws, message, chunks)
    return {"ok": True, "channel": channel.id, "ts": message.ts}


def _open_stream(ws: Workspace, p: Params) -> Message:
    _streaming(ws)
    channel = ws.writable_channel(p.str("channel"))
    message = ws.message(channel.id, p.str("ts"))
    if message.user != BOT_USER_ID:
        raise ApiFailure("cant_update_message")
    if not message.streaming:
        raise ApiFailure("message_not_in_streaming_state")
    return message


def chat_append_stream(ws: Workspace, p: Params) -> dict[str, Any]:
    message = _open_stream(ws, p)
    chunks = _chunks(p)
    if not chunks:
        raise _invalid("markdown_text or chunks is required")
    _apply(ws, message, chunks)
    return {"ok": True, "channel": message.channel, "ts": message.ts}


def chat_stop_stream(ws: Workspace, p: Params) -> dict[str, Any]:
    message = _open_stream(ws, p)
    chunks = _chunks(p)
    blocks = p.json("blocks", "invalid_blocks_format") if "blocks" in p else []
    errors = block_errors(blocks or [], MESSAGE_MAX_BLOCKS)
    if errors:
        raise ApiFailure("invalid_blocks", **error_fields(errors))
    _apply(ws, message, chunks)
    assert message.stream is not None
    message.stream.stopped = True
    message.blocks = blocks or []
    if "metadata" in p:
        message.metadata = p.json("metadata", "invalid_metadata_format")
    return {"ok": True, "channel": message.channel, "ts": message.ts,
            "message": message.to_api()}


def _thread(ws: Workspace, p: Params, required: bool = True) -> tuple[str, str]:
    channel = ws.channel(p.str("channel_id"))
    thread_ts = p.required("thread_ts") if required else (p.str("thread_ts") or "")
    return channel.id, thread_ts


def assistant_threads_set_status(ws: Workspace, p: Params) -> dict[str, Any]:
    channel, thread_ts = _thread(ws, p)
    status = p.str("status")
    if status is None:
        raise _invalid("status is required (empty clears it)")
    loading = p.json("loading_messages", "invalid_arguments") if "loading_messages" in p else []
    if not isinstance(loading, list) or len(loading) > MAX_LOADING_MESSAGES or not all(
            isinstance(m, str) and m for m in loading):
        raise _invalid(f"loading_messages must be up to {MAX_LOADING_MESSAGES} strings")
    ws.assistant_thread(channel, thread_ts).statuses.append(status)
    return {"ok": True}


def assistant_threads_set_suggested_prompts(ws: Workspace, p: Params) -> dict[str, Any]:
    channel, thread_ts = _thread(ws, p, required=False)
    prompts = p.json("prompts", "invalid_arguments")
    if not isinstance(prompts, list) or not 1 <= len(prompts) <= MAX_PROMPTS:
        raise _invalid(f"prompts must hold 1 to {MAX_PROMPTS} prompts")
    for prompt in prompts:
        if not (isinstance(prompt, dict) and set(prompt) == {"title", "message"}
                and all(isinstance(v, str) and v for v in prompt.values())):
            raise _invalid("each prompt must be {title, message}, both non-empty")
    thread = ws.assistant_thread(channel, thread_ts)
    thread.prompts, thread.prompts_title = prompts, p.str("title") or ""
    return {"ok": True}


def assistant_threads_set_title(ws: Workspace, p: Params) -> dict[str, Any]:
    channel, thread_ts = _thread(ws, p)
    ws.assistant_thread(channel, thread_ts).title = p.required("title")
    return {"ok": True}


def views_publish(ws: Workspace, p: Params) -> dict[str, Any]:
    user = ws.user(p.required("user_id", "user_not_found"))
    view = p.json("view", "invalid_arguments")
    if not isinstance(view, dict) or view.get("type") != "home":
        raise _invalid("views.publish takes a view of type home")
    errors = block_errors(view.get("blocks", []), VIEW_MAX_BLOCKS)
    if errors:
        raise ApiFailure("invalid_arguments",
                         response_metadata={"messages": [f"[ERROR] {e}" for e in errors]})
    current = ws.home_views.get(user.id)
    if current is not None and p.str("hash") and p.str("hash") != current.hash:
        raise ApiFailure("hash_conflict")
    if current is None:
        current = ws.home_views[user.id] = View(ws.next_id("V"), view, "", view_hash(view))
    else:
        current.history.append(current.view)
        current.view, current.hash = view, view_hash(view)
    return {"ok": True, "view": current.to_api()}


def users_conversations(ws: Workspace, p: Params) -> dict[str, Any]:
    user = ws.user(p.str("user") or BOT_USER_ID).id
    channels = [c.to_api() for c in ws.channels.values()
                if user in c.members or user == BOT_USER_ID]
    return {"ok": True, "channels": channels, "response_metadata": {"next_cursor": ""}}


AI_METHODS: dict[str, Handler] = {
    "assistant.threads.setStatus": assistant_threads_set_status,
    "assistant.threads.setSuggestedPrompts": assistant_threads_set_suggested_prompts,
    "assistant.threads.setTitle": assistant_threads_set_title,
    "chat.startStream": chat_start_stream,
    "chat.appendStream": chat_append_stream,
    "chat.stopStream": chat_stop_stream,
    "views.publish": views_publish,
    "users.conversations": users_conversations,
}
