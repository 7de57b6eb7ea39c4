"""Inside the sandbox container: talk to one MCP server for one call, then let it go.

A stdio server is started here, as a child of the entrypoint, with the server entry's plain
``vars`` and the secrets of its ``env`` (minted for this action, read from the request on
stdin) as its environment: nothing from the host, never in the image. An HTTP server is
reached through the egress forwarders (``ActionContext.address``), with the entry's
``headers`` filled from the same secrets. The container is thrown away afterwards, so
whatever the server did lives no longer than the call.

Everything becomes a :class:`~tools.base.ToolResult`: the tool's content blocks rendered as
text and cut at :data:`MAX_RESULT_CHARS` (a 5 MB answer is not relayed), ``isError`` as an
error, a server that crashes, speaks something else or does not answer in time as one
sentence naming the server.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tools.base import ActionContext, ToolResult
from tools.mcp import LIST, ServerEntry, list_timeout

MAX_RESULT_CHARS = 60_000
MAX_TOOLS = 500
MAX_PAGES = 20
INHERITED = ("PYTHONPATH", "PATH", "LANG")


def call(entry: ServerEntry, tool: str, params: dict[str, Any], ctx: ActionContext) -> ToolResult:
    invocation = f"{entry.name} {tool}"

    async def go(client: Any) -> ToolResult:
        async def progress(done: float, total: float | None, message: str | None) -> None:
            ctx.progress(message or (f"{done:g}/{total:g}" if total else f"{done:g}"))

        result = await client.call_tool(tool, params, read_timeout_seconds=entry.timeout,
                                        progress_callback=progress)
        return _result(invocation, result)

    if _LIVE is not None and _LIVE.entry == entry:
        return _LIVE.run(invocation, go)
    return _session(entry, ctx, invocation, go)


class _Live:
    """The session a warm-pool container opened before its call arrived (:func:`prestarted`);
    the call, made from the entrypoint's worker thread, runs on the session's event loop."""

    def __init__(self, entry: ServerEntry, client: Any):
        self.entry = entry
        self.client = client

    def run(self, invocation: str, work: Callable[[Any], Awaitable[ToolResult]]) -> ToolResult:
        import anyio
        import anyio.from_thread

        async def bounded() -> ToolResult:
            with anyio.fail_after(self.entry.timeout):
                return await work(self.client)

        return _guarded(self.entry, invocation, self.entry.timeout,
                        lambda: anyio.from_thread.run(bounded))


_LIVE: _Live | None = None


def prestarted(entry: ServerEntry, ready: Callable[[], None], answer: Callable[[], None]) -> int:
    """Start ``entry``'s server and open its session, say ready, then ``answer`` the one
    request (read from stdin in a worker thread); a server that fails to start means no
    ready, and the pool discards the container."""
    import anyio
    import anyio.to_thread

    async def main() -> None:
        global _LIVE
        from mcp import Client

        async with Client(_server(entry, ActionContext(config={})), cache=None,
                          read_timeout_seconds=entry.timeout) as client:
            _LIVE = _Live(entry, client)
            ready()
            await anyio.to_thread.run_sync(answer)

    try:
        anyio.run(main)
    except Exception:  # noqa: BLE001 - no ready was said, or the answer is already written
        return 1
    return 0


def list_tools(entry: ServerEntry, ctx: ActionContext) -> ToolResult:
    invocation = f"{entry.name} {LIST}"

    async def go(client: Any) -> ToolResult:
        tools: list[dict[str, Any]] = []
        cursor = None
        for _ in range(MAX_PAGES):
            page = await client.session.list_tools(cursor=cursor) if cursor else \
                await client.list_tools()
            tools += [_spec(t) for t in page.tools]
            cursor = page.next_cursor
            if not cursor or len(tools) >= MAX_TOOLS:
                break
        return ToolResult.ok(invocation, f"{len(tools)} tools", data=tools[:MAX_TOOLS])

    return _session(entry, ctx, invocation, go, list_timeout(entry))


def _spec(tool: Any) -> dict[str, Any]:
    notes = tool.annotations
    return {
        "name": tool.name,
        "description": tool.description or "",
        "input_schema": tool.input_schema,
        "read_only": getattr(notes, "read_only_hint", None),
        "destructive": getattr(notes, "destructive_hint", None),
    }


def _session(entry: ServerEntry, ctx: ActionContext, invocation: str,
             work: Callable[[Any], Awaitable[ToolResult]], limit: float | None = None
             ) -> ToolResult:
    import anyio

    limit = limit or entry.timeout

    async def main() -> ToolResult:
        from mcp import Client

        with anyio.fail_after(limit):
            async with Client(_server(entry, ctx), read_timeout_seconds=limit,
                              cache=None) as client:
                return await work(client)

    return _guarded(entry, invocation, limit, lambda: anyio.run(main))


def _guarded(entry: ServerEntry, invocation: str, limit: float,
             run: Callable[[], ToolResult]) -> ToolResult:
    try:
        return run()
    except TimeoutError:
        return ToolResult.fail(invocation, f"The MCP server `{entry.name}` did not answer within "
                                           f"{limit:g} s.")
    except Exception as e:  # noqa: BLE001 - a broken or hostile server is reported as a value
        return ToolResult.fail(invocation, _failure(entry, e))


def _failure(entry: ServerEntry, error: BaseException) -> str:
    from mcp import MCPError
    from mcp_types.jsonrpc import CONNECTION_CLOSED

    inner = _innermost(error)
    if isinstance(inner, MCPError) and inner.code != CONNECTION_CLOSED:
        return f"The MCP server `{entry.name}` refused the call: {str(inner)[:500]}"
    if isinstance(inner, (FileNotFoundError, PermissionError)):
        return (f"The MCP server `{entry.name}` could not be started (`{entry.command}`: "
                f"{type(inner).__name__}); is it installed in the sandbox image?")
    return (f"The MCP server `{entry.name}` failed or closed the connection "
            f"({type(inner).__name__}) before answering.")


def _innermost(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _server(entry: ServerEntry, ctx: ActionContext) -> Any:
    """A transport: the server's stderr is discarded, being untrusted text that must not
    reach the entrypoint's stderr, where progress lines travel."""
    if entry.transport == "stdio":
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        params = StdioServerParameters(command=entry.command or "", args=list(entry.args),
                                       env=_environment(entry, ctx), cwd=entry.cwd)
        return stdio_client(params, errlog=open(os.devnull, "w"))  # noqa: SIM115
    return _http(entry, ctx)


def _environment(entry: ServerEntry, ctx: ActionContext) -> dict[str, str]:
    env = {k: os.environ[k] for k in INHERITED if k in os.environ}
    env.update(HOME="/tmp", **entry.vars)
    env.update({k: ctx.secrets[f"env:{k}"] for k in entry.env if f"env:{k}" in ctx.secrets})
    return env


def _http(entry: ServerEntry, ctx: ActionContext) -> Any:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    parts = urlsplit(entry.url or "")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host, mapped = ctx.address(parts.hostname or "", port)
    url = urlunsplit(parts._replace(netloc=f"{host}:{mapped}"))
    headers = {k: ctx.secrets[f"header:{k}"] for k in entry.headers if f"header:{k}" in ctx.secrets}
    headers["Host"] = parts.netloc  # the server's own name, whichever forwarder carries it
    client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=entry.timeout))
    return streamable_http_client(url, http_client=client)


def _result(invocation: str, result: Any) -> ToolResult:
    text = "\n".join(_block(b) for b in result.content or [])
    if not text and result.structured_content is not None:
        import json

        text = json.dumps(result.structured_content, ensure_ascii=False)
    shown = text[:MAX_RESULT_CHARS]
    if len(text) > MAX_RESULT_CHARS:
        shown += f"\n… ({len(text) - MAX_RESULT_CHARS:,} more characters cut by opsbot)"
    if result.is_error:
        return ToolResult.fail(invocation, shown or "the tool reported an error without text")
    return ToolResult.ok(invocation, shown) if shown else ToolResult.no_data(invocation, "")


def _block(block: Any) -> str:
    kind = getattr(block, "type", "")
    if kind == "text":
        return block.text
    if kind == "resource":
        inner = block.resource
        return getattr(inner, "text", None) or f"[resource {inner.uri}]"
    if kind == "resource_link":
        return f"[resource link {block.uri}]"
    if kind in ("image", "audio"):
        return f"[{kind} {block.mime_type}, {len(block.data) * 3 // 4:,} bytes]"
    return f"[{kind or 'unknown'} content]"
