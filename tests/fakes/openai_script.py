"""What the OpenAI emulator answers: scripted steps, and Chat Completions bodies built from them.

A test scripts the model as a list of steps, or as a function of the request (so it can answer
based on the conversation)::

    script = [
        tool_call("redis_info", {"section": "memory"}),             # one tool call
        [tool_call("redis_info", {}), tool_call("redis_slowlog", {"count": 5})],  # parallel
        text("Memory is fine; the slow log shows KEYS * from cron."),
        http_error(429),                                             # OpenAI's rate-limit error
        Delay(0.5),                                                  # then the next step, late
    ]

    def script(request: dict) -> Step:                              # or decide per request
        return text("done") if tool_results(request) else tool_call("redis_info", {})

Everything here is pure; :mod:`tests.fakes.openai` serves it over HTTP.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

SYSTEM_FINGERPRINT = "fp_emulator"
ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ARGUMENT_FRAGMENT = 8  # characters of tool arguments per streamed delta
TOKEN = re.compile(r"\s*\S+|\s+")


@dataclass(frozen=True)
class ToolCall:
    """One function call the scripted model makes; ``args`` may be a raw (even broken) string."""

    name: str
    args: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    @property
    def arguments(self) -> str:
        return self.args if isinstance(self.args, str) else json.dumps(self.args)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def to_api(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}


@dataclass(frozen=True)
class Reply:
    """An assistant message: text, tool calls, or both. ``chunk_delay`` paces streaming."""

    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage | None = None
    finish_reason: str | None = None
    chunk_delay: float = 0.0

    @property
    def finish(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")


@dataclass(frozen=True)
class HttpError:
    """An HTTP error answer in OpenAI's ``{"error": {...}}`` shape."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": None,
                          "code": self.code}}


@dataclass(frozen=True)
class Delay:
    """Wait before answering this request with the next step."""

    seconds: float


Step: TypeAlias = Reply | ToolCall | Sequence[ToolCall] | HttpError | Delay
Script: TypeAlias = Callable[[dict[str, Any]], Step]


def text(content: str, usage: Usage | None = None, chunk_delay: float = 0.0) -> Reply:
    return Reply(content=content, usage=usage, chunk_delay=chunk_delay)


def tool_call(name: str, args: dict[str, Any] | str | None = None,
              id: str | None = None) -> ToolCall:
    """A tool call step; a list of them in one step is a parallel call."""
    return ToolCall(name, {} if args is None else args, id)


def http_error(status: int, message: str | None = None, code: str | None = None,
               retry_after: int | None = None) -> HttpError:
    """OpenAI's error for ``status`` (429 rate limit, 500 server error ...), or a custom one."""
    defaults = {
        400: ("Invalid request.", "invalid_request_error", None),
        401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
        429: ("Rate limit reached for requests. Please try again in 1s.", "requests",
              "rate_limit_exceeded"),
        500: ("The server had an error while processing your request. Sorry about that!",
              "server_error", None),
        503: ("The engine is currently overloaded, please try again later.", "server_error",
              None),
    }
    message_, type_, code_ = defaults.get(status, (f"HTTP {status}", "api_error", None))
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return HttpError(status, message or message_, type_, code or code_, headers)


def as_reply(step: Step) -> Reply:
    """Normalise a scripted step (tool call, list of tool calls, reply) into a :class:`Reply`."""
    if isinstance(step, Reply):
        return step
    if isinstance(step, ToolCall):
        return Reply(tool_calls=(step,))
    calls = tuple(step)  # type: ignore[arg-type]
    if not calls or not all(isinstance(c, ToolCall) for c in calls):
        raise TypeError(f"not a script step: {step!r} (use text(), tool_call(), http_error(), "
                        "Delay, or a list of tool_call())")
    return Reply(tool_calls=calls)


def tool_results(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``tool`` messages in a chat request (for script functions)."""
    return [m for m in request.get("messages", []) if m.get("role") == "tool"]


def last_user_text(request: dict[str, Any]) -> str:
    users = [m for m in request.get("messages", []) if m.get("role") == "user"]
    return _text_of(users[-1].get("content")) if users else ""


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def estimate_tokens(text: str) -> int:
    """Roughly four characters per token, like OpenAI's rule of thumb; deterministic."""
    return max(1, len(text) // 4)


def usage_for(request: dict[str, Any], reply: Reply) -> Usage:
    if reply.usage is not None:
        return reply.usage
    prompt = json.dumps([request.get("messages", []), request.get("tools", [])])
    answer = (reply.content or "") + "".join(c.name + c.arguments for c in reply.tool_calls)
    return Usage(estimate_tokens(prompt), estimate_tokens(answer))


def request_error(body: Any) -> HttpError | None:
    """The 400 OpenAI would answer for a malformed chat request, or None."""
    if not isinstance(body, dict):
        return _invalid("We could not parse the JSON body of your request.")
    if not body.get("model"):
        return _invalid("you must provide a model parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _invalid("Invalid 'messages': empty array. Expected an array with minimum "
                        "length 1, but got an empty array instead.", "empty_array")
    return _messages_error(messages) or _tools_error(body.get("tools") or [])


def _messages_error(messages: list[Any]) -> HttpError | None:
    pending: list[str] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            return _invalid(f"Invalid value: '{role}'. Supported values are: "
                            f"{', '.join(sorted(ROLES))}. [messages[{i}].role]")
        if pending and role != "tool":
            return _unanswered(pending)
        if role == "assistant":
            pending = [c.get("id") for c in message.get("tool_calls") or []]
        elif role == "tool":
            if message.get("tool_call_id") not in pending:
                return _invalid("Invalid parameter: messages with role 'tool' must be a "
                                "response to a preceeding message with 'tool_calls'.")
            pending.remove(message["tool_call_id"])
    return _unanswered(pending) if pending else None


def _unanswered(pending: list[str]) -> HttpError:
    return _invalid("An assistant message with 'tool_calls' must be followed by tool messages "
                    "responding to each 'tool_call_id'. The following tool_call_ids did not "
                    f"have response messages: {', '.join(pending)}")


def _tools_error(tools: list[Any]) -> HttpError | None:
    for i, tool in enumerate(tools):
        name = (tool.get("function") or {}).get("name", "") if isinstance(tool, dict) else ""
        if not TOOL_NAME.match(str(name)):
            return _invalid(f"Invalid 'tools[{i}].function.name': string does not match "
                            f"pattern. Expected a string that matches the pattern "
                            f"'^[a-zA-Z0-9_-]+$'. Got {name!r}.", "invalid_value")
    return None


def _invalid(message: str, code: str | None = None) -> HttpError:
    return HttpError(400, message, "invalid_request_error", code)


def _tool_calls_api(reply: Reply) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": c.arguments}} for c in reply.tool_calls]


def completion(request: dict[str, Any], reply: Reply, completion_id: str) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` body."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None,
                               "annotations": []}
    if reply.tool_calls:
        message["tool_calls"] = _tool_calls_api(reply)
    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()),
            "model": request["model"], "system_fingerprint": SYSTEM_FINGERPRINT,
            "service_tier": "default",
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": reply.finish}],
            "usage": usage_for(request, reply).to_api()}


def chunks(request: dict[str, Any], reply: Reply, completion_id: str) -> Iterator[dict]:
    """The ``chat.completion.chunk`` objects of a streamed answer, in order."""
    with_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    base = {"id": completion_id, "object": "chat.completion.chunk",
            "created": int(time.time()), "model": request["model"],
            "system_fingerprint": SYSTEM_FINGERPRINT, "service_tier": "default"}
    base.update({"usage": None} if with_usage else {})

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for token in TOKEN.findall(reply.content or ""):
        yield chunk({"content": token})
    for delta in _tool_call_deltas(reply):
        yield chunk({"tool_calls": [delta]})
    yield chunk({}, reply.finish)
    if with_usage:
        yield {**base, "choices": [], "usage": usage_for(request, reply).to_api()}


def _tool_call_deltas(reply: Reply) -> Iterator[dict[str, Any]]:
    """Per call: a delta with index, id and name, then argument fragments (as OpenAI streams)."""
    for index, call in enumerate(reply.tool_calls):
        yield {"index": index, "id": call.id, "type": "function",
               "function": {"name": call.name, "arguments": ""}}
        args = call.arguments
        for start in range(0, len(args), ARGUMENT_FRAGMENT):
            yield {"index": index,
                   "function": {"arguments": args[start:start + ARGUMENT_FRAGMENT]}}
