"""Serving one ASGI application (the ``mcp`` library's streamable-HTTP endpoint) from an
aiohttp handler, so it shares opsbot's port, its body limit and its authentication.

The request body is read whole and bounded first (MCP messages are small JSON); the response
is streamed as the application sends it (server-sent events for progress). ``receive`` after
the body waits until the response is complete or the client is gone, then says
``http.disconnect``, which is what ASGI servers do and what streaming responses listen for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiohttp import web

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]],
                   Awaitable[None]]


async def serve(app: ASGIApp, request: web.Request, extra: dict[str, Any],
                max_body: int) -> web.StreamResponse:
    body = await request.read() if request.can_read_body else b""
    if len(body) > max_body:
        return web.json_response({"error": f"body larger than {max_body} bytes"}, status=413)
    exchange = _Exchange(request, body)
    await app(_scope(request, extra), exchange.receive, exchange.send)
    return await exchange.finish()


def _scope(request: web.Request, extra: dict[str, Any]) -> Scope:
    host, port = (request.transport.get_extra_info("sockname") or ("", 0))[:2] \
        if request.transport else ("", 0)
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": request.method, "scheme": request.scheme, "path": request.path,
        "raw_path": request.raw_path.encode(), "root_path": "",
        "query_string": request.query_string.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in request.headers.items()],
        "client": (request.remote or "", 0), "server": (host, port), **extra,
    }


class _Exchange:
    def __init__(self, request: web.Request, body: bytes):
        self.request = request
        self.body: bytes | None = body
        self.response: web.StreamResponse | None = None
        self.done = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        try:
            if message["type"] == "http.response.start":
                await self._start(message)
            elif message["type"] == "http.response.body" and self.response is not None:
                await self._body(message)
        except (ConnectionResetError, RuntimeError):
            self.done.set()  # the client went away: the app hears http.disconnect

    async def _start(self, message: dict[str, Any]) -> None:
        response = web.StreamResponse(status=message["status"])
        for name, value in message.get("headers", []):
            key = name.decode("latin-1")
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                response.headers.add(key, value.decode("latin-1"))
        self.response = response
        await response.prepare(self.request)

    async def _body(self, message: dict[str, Any]) -> None:
        assert self.response is not None
        if message.get("body"):
            await self.response.write(message["body"])
        if not message.get("more_body", False):
            await self.response.write_eof()
            self.done.set()

    async def finish(self) -> web.StreamResponse:
        self.done.set()
        if self.response is None:
            return web.Response(status=500)
        return self.response
