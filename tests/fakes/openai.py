"""An OpenAI-compatible HTTP server with a scripted model, for the real ``ChatOpenAI`` client.

It serves ``POST /v1/chat/completions`` (JSON and SSE streaming, tool calls incl. parallel ones,
usage), ``POST /v1/embeddings`` (deterministic bag-of-words vectors, so texts sharing words are
near each other) and ``GET /v1/models``. It checks the bearer key (401 like OpenAI), rejects
requests the real API rejects (a tool call without its tool result, tool names with dots ...),
and records every request so tests can assert what the model was shown.

Usage::

    with OpenAIEmulator([tool_call("redis_info", {}), text("All good.")]) as llm_api:
        llm = ChatOpenAI(model="gpt-4o-mini", base_url=llm_api.base_url, api_key=API_KEY,
                         use_responses_api=False, stream_usage=True, max_retries=0)
        ...
        assert llm_api.errors == []                      # the script matched the traffic
        assert "hunter2" not in llm_api.all_text()       # no secret reached the model

Steps and helpers (``text``, ``tool_call``, ``http_error``, ``Delay``) live in
:mod:`tests.fakes.openai_script` and are re-exported here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from aiohttp import web

from tests.fakes.openai_script import (
    Delay,
    HttpError,
    Reply,
    Script,
    Step,
    ToolCall,
    Usage,
    as_reply,
    chunks,
    completion,
    http_error,
    last_user_text,
    request_error,
    text,
    tool_call,
    tool_results,
)
from tests.fakes.server import Emulator, strings_in

__all__ = [
    "API_KEY", "MODEL", "Delay", "HttpError", "OpenAIEmulator", "Reply", "Request", "Step",
    "ToolCall", "Usage", "http_error", "last_user_text", "openai_emulator", "text", "tool_call",
    "tool_results",
]

API_KEY = "sk-test-opsbot-0000000000000000"
MODEL = "gpt-4o-mini"
EMBEDDING_DIMENSIONS = {"text-embedding-3-large": 3072}
DEFAULT_DIMENSIONS = 1536
WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Request:
    """One HTTP request as the emulator received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


class OpenAIEmulator(Emulator):
    """OpenAI's HTTP API on loopback, answering chat requests from a script."""

    def __init__(self, script: Sequence[Step] | Script = (), api_key: str = API_KEY,
                 models: Sequence[str] | None = None):
        self.api_key = api_key
        self.models = list(models) if models else None
        self.errors: list[str] = []  # script problems: exhausted, bad steps, raising callables
        self._lock = threading.Lock()
        self._steps: deque[Step] = deque()
        self._respond: Script | None = None
        self._requests: list[Request] = []
        self._serial = 0
        self.push(*([] if callable(script) else script))
        if callable(script):
            self.respond_with(script)
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.add_routes([web.post("/v1/chat/completions", self._chat),
                        web.post("/v1/embeddings", self._embeddings),
                        web.get("/v1/models", self._models),
                        web.route("*", "/{tail:.*}", self._not_found)])
        super().__init__(app, "openai-emulator")

    @property
    def base_url(self) -> str:
        """What ``ChatOpenAI(base_url=...)`` and ``OPENAI_BASE_URL`` expect."""
        return f"{self.origin}/v1"

    def env(self, model: str = MODEL) -> dict[str, str]:
        """opsbot's environment for talking to this emulator (DESIGN §6 names)."""
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": self.api_key,
                "OPSBOT_MODEL": model}

    def push(self, *steps: Step) -> None:
        """Append steps; each chat request consumes one (a :class:`Delay` adds to the next)."""
        with self._lock:
            self._steps.extend(steps)

    def respond_with(self, script: Script) -> None:
        """Answer requests with ``script(request_json)`` once the listed steps are used up."""
        self._respond = script

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._steps)

    def requests(self, path: str | None = "/v1/chat/completions") -> list[Request]:
        """Recorded requests to ``path`` (``None``: every request)."""
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def all_text(self) -> str:
        """Every string sent to the model API, one per line: for canary-secret assertions."""
        with self._lock:
            bodies = [r.body for r in self._requests]
        return "\n".join(s for body in bodies for s in strings_in(body))

    def describe(self) -> str:
        return (f"the OpenAI emulator saw {len(self.requests())} chat request(s), "
                f"{self.remaining} step(s) left, errors: {self.errors or 'none'}")

    # HTTP handlers (on the emulator's loop) ----------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._receive(request)
        problem = self._auth_error(request) or request_error(body) or self._model_error(body)
        if problem is not None:
            return _error_response(problem)
        step = await self._next_step(body)
        if isinstance(step, HttpError):
            return _error_response(step)
        reply = self._with_ids(step)
        completion_id = f"chatcmpl-emulator{self._next_serial():06d}"
        if body.get("stream"):
            return await _stream(request, body, reply, completion_id)
        return web.json_response(completion(body, reply, completion_id))

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._receive(request)
        problem = self._auth_error(request) or _embedding_error(body)
        if problem is not None:
            return _error_response(problem)
        return web.json_response(_embedding_response(body))

    async def _models(self, request: web.Request) -> web.Response:
        await self._receive(request)
        problem = self._auth_error(request)
        if problem is not None:
            return _error_response(problem)
        names = self.models or [MODEL, "gpt-4o", "gpt-4.1-mini", "text-embedding-3-small"]
        return web.json_response({"object": "list", "data": [
            {"id": n, "object": "model", "created": 1_700_000_000, "owned_by": "system"}
            for n in names]})

    async def _not_found(self, request: web.Request) -> web.Response:
        await self._receive(request)
        return _error_response(HttpError(404, f"Invalid URL ({request.method} {request.path})"))

    async def _receive(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        with self._lock:
            self._requests.append(Request(request.method, request.path, dict(request.headers),
                                          body, time.monotonic()))
        return body

    def _auth_error(self, request: web.Request) -> HttpError | None:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not given:
            return HttpError(401, "You didn't provide an API key. You need to provide your API "
                             "key in an Authorization header using Bearer auth.")
        if given != self.api_key:
            return http_error(401, f"Incorrect API key provided: {_mask(given)}. You can find "
                              "your API key in your account settings.")
        return None

    def _model_error(self, body: dict[str, Any]) -> HttpError | None:
        if self.models is None or body["model"] in self.models:
            return None
        return HttpError(404, f"The model `{body['model']}` does not exist or you do not have "
                         "access to it.", code="model_not_found")

    async def _next_step(self, body: dict[str, Any]) -> Reply | HttpError:
        while True:
            step = self._pop(body)
            if isinstance(step, Delay):
                await asyncio.sleep(step.seconds)
                continue
            if isinstance(step, HttpError):
                return step
            try:
                return as_reply(step)
            except TypeError as e:
                return self._script_error(str(e))

    def _pop(self, body: dict[str, Any]) -> Step:
        with self._lock:
            if self._steps:
                return self._steps.popleft()
        if self._respond is None:
            count = len(self.requests())
            return self._script_error(f"script exhausted at chat request #{count}; "
                                      "push() more steps or respond_with() a function")
        try:
            return self._respond(body)
        except Exception as e:  # noqa: BLE001 - a broken test script is reported, not fatal
            return self._script_error(f"script function raised {type(e).__name__}: {e}")

    def _script_error(self, message: str) -> HttpError:
        self.errors.append(message)
        return HttpError(500, f"OpenAIEmulator: {message}", "emulator_error")

    def _with_ids(self, reply: Reply) -> Reply:
        calls = tuple(c if c.id else replace(c, id=f"call_emulator{self._next_serial():06d}")
                      for c in reply.tool_calls)
        return replace(reply, tool_calls=calls)

    def _next_serial(self) -> int:
        with self._lock:
            self._serial += 1
            return self._serial


async def _stream(request: web.Request, body: dict[str, Any], reply: Reply,
                  completion_id: str) -> web.StreamResponse:
    """Server-sent events: one ``data:`` line per chunk, then ``data: [DONE]``."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    for chunk in chunks(body, reply, completion_id):
        await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if reply.chunk_delay:
            await asyncio.sleep(reply.chunk_delay)
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _error_response(error: HttpError) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=error.headers)


def _mask(key: str) -> str:
    return f"{key[:3]}*****{key[-4:]}" if len(key) > 8 else "*****"


def _embedding_error(body: Any) -> HttpError | None:
    if not isinstance(body, dict) or not body.get("model"):
        return HttpError(400, "you must provide a model parameter")
    if not body.get("input"):
        return HttpError(400, "'$.input' is invalid. Please check the API reference.")
    return None


def _inputs(value: Any) -> list[str]:
    """``input`` may be a string, a list of strings, or token id lists; all become text."""
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(v, int) for v in value):
        return [" ".join(map(str, value))]
    return [v if isinstance(v, str) else " ".join(map(str, v)) for v in value]


def embed(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """A unit vector hashing each word to a signed dimension: shared words ⇒ higher cosine."""
    vector = [0.0] * dimensions
    for word in WORD.findall(text.lower()):
        digest = hashlib.sha256(word.encode()).digest()
        index = int.from_bytes(digest[:4], "big") % dimensions
        vector[index] += 1.0 if digest[4] % 2 == 0 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:
        vector[0], norm = 1.0, 1.0
    return [v / norm for v in vector]


def _embedding_response(body: dict[str, Any]) -> dict[str, Any]:
    dims = int(body.get("dimensions") or EMBEDDING_DIMENSIONS.get(body["model"],
                                                                  DEFAULT_DIMENSIONS))
    texts = _inputs(body["input"])
    as_base64 = body.get("encoding_format") == "base64"
    data = [{"object": "embedding", "index": i, "embedding": _encode(embed(t, dims), as_base64)}
            for i, t in enumerate(texts)]
    tokens = sum(max(1, len(t) // 4) for t in texts)
    return {"object": "list", "data": data, "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _encode(vector: list[float], as_base64: bool) -> list[float] | str:
    if not as_base64:
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


@pytest.fixture
def openai_emulator() -> Iterator[OpenAIEmulator]:
    """A running OpenAI emulator with an empty script (``push()`` steps in the test)."""
    with OpenAIEmulator() as emulator:
        yield emulator
