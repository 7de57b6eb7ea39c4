"""``opsbot mcp``: opsbot's catalog for an MCP client that speaks stdio (an IDE, a desktop
agent), relayed to a running opsbot's ``/mcp`` endpoint.

The gate stays on the server: the machine running ``opsbot mcp`` holds only a bearer token
(``OPSBOT_TOKEN``), never Vault, Docker or Slack credentials, and every call is checked,
approved and run by the opsbot at ``OPSBOT_MCP_URL`` (default: this machine's
``http://127.0.0.1:$OPSBOT_PORT/mcp``). Progress notifications (an approval being waited for)
are relayed to the client as they arrive.

    {"command": "opsbot", "args": ["mcp"], "env": {"OPSBOT_TOKEN": "opsbot_t-…"}}
"""

from __future__ import annotations

from typing import Any

import httpx2
import mcp.types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server
from mcp.server.stdio import stdio_server

from bot.errors import ConfigError
from bot.settings import Settings

CALL_TIMEOUT_S = 4 * 3600.0  # an approval may take a while; the server ends the run anyway


def relay(upstream: Client) -> Server:
    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return await upstream.list_tools()

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        async def progress(done: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(done, total, message)

        return await upstream.call_tool(params.name, params.arguments or {},
                                        read_timeout_seconds=CALL_TIMEOUT_S,
                                        progress_callback=progress)

    return Server("opsbot", version="1", on_list_tools=list_tools, on_call_tool=call_tool)


def upstream_for(settings: Settings) -> Client:
    if settings.token is None:
        raise ConfigError("OPSBOT_TOKEN is not set: create one with `opsbot tokens create "
                          "--as <your Slack user id>` and put it in the MCP client's env.")
    url = _url(settings)
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer "
                                                        f"{settings.token.get_secret_value()}"},
                              timeout=httpx2.Timeout(30, read=CALL_TIMEOUT_S))
    return Client(streamable_http_client(url, http_client=http), cache=None)


async def bridge(settings: Settings) -> None:
    """Relay until the client closes stdin; an opsbot that can't be reached or refuses the
    token is a :class:`ConfigError` (one sentence), not a traceback in the client's log."""
    upstream = upstream_for(settings)
    await _preflight(settings)
    try:
        await upstream.__aenter__()
    except Exception as e:  # noqa: BLE001 - turned into the sentence the user can act on
        raise ConfigError(_unreachable(settings, e)) from None
    try:
        async with stdio_server() as (read, write):
            server = relay(upstream)
            await server.run(read, write, server.create_initialization_options())
    finally:
        await upstream.__aexit__(None, None, None)


async def _preflight(settings: Settings) -> None:
    """One ping with the token, so a refused token is told as such (the MCP client reports
    any HTTP error status the same way)."""
    assert settings.token is not None
    headers = {"Authorization": f"Bearer {settings.token.get_secret_value()}",
               "Accept": "application/json, text/event-stream"}
    try:
        async with httpx2.AsyncClient(timeout=15) as http:
            response = await http.post(_url(settings), headers=headers,
                                       json={"jsonrpc": "2.0", "id": 0, "method": "ping"})
    except httpx2.HTTPError as e:
        raise ConfigError(_unreachable(settings, e)) from None
    if response.status_code == 401:
        raise ConfigError(f"{_url(settings)} refused OPSBOT_TOKEN (401: unknown, expired or "
                          "revoked); create a new one with `opsbot tokens create`.")


def _url(settings: Settings) -> str:
    return settings.mcp_url or f"http://127.0.0.1:{settings.port or 3000}/mcp"


def _unreachable(settings: Settings, error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return (f"could not reach opsbot at {_url(settings)} ({type(error).__name__}); is "
            "`opsbot serve` running there? Set OPSBOT_MCP_URL to its /mcp address.")
