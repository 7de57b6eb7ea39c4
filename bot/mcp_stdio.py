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
    url = settings.mcp_url or f"http://127.0.0.1:{settings.port or 3000}/mcp"
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer "
                                                        f"{settings.token.get_secret_value()}"},
                              timeout=httpx2.Timeout(30, read=CALL_TIMEOUT_S))
    return Client(streamable_http_client(url, http_client=http), cache=None)


async def bridge(settings: Settings) -> None:
    async with upstream_for(settings) as upstream, stdio_server() as (read, write):
        server = relay(upstream)
        await server.run(read, write, server.create_initialization_options())
