"""opsbot's catalog served over MCP: ``POST /mcp`` (streamable HTTP) on the bot's port.

Every configured action is an MCP tool named ``<toolset>__<action>`` (the LLM agent's names),
with the action's JSON schema and annotations from its tier (0: ``readOnlyHint``; 3-4:
``destructiveHint``). A caller authenticates with a bearer token (``bot/tokens.py``) and sees
only what its token allows. Each call is a *run* for the token's Slack user, submitted through
the run manager like a slash command: policy applies, a gated call posts its approval card in
the token's first channel (else ``OPSBOT_MCP_CHANNEL``), and the MCP call completes once the
run ends — with progress notifications while it waits, and a tool error carrying the reason
when it is denied, expires or fails. A client that cancels (or goes away) ends its run, so
nothing waits for an approval nobody will collect. Everything is audited like a Slack run.

The endpoint is stateless (no MCP session to keep on one process), so any opsbot process can
answer any request; the run itself may execute elsewhere: the wait reads the run store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mcp.types as types
import structlog
from aiohttp import web
from mcp.server import Server
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from bot import asgi, messages
from bot.deps import BotDeps
from bot.http_body import MAX_BODY
from bot.tokens import Token, TokenStore, authenticate
from graph.agent import tool_name
from graph.outcome import reported_calls, wait_for_end
from graph.policy import Channel, Proposer, Requester, Verdict, evaluate
from graph.runs import Refused
from graph.surface import RunState
from graph.task import Source, Task
from tools.base import Action, Tier, Toolset
from tools.catalog import Call

log = structlog.get_logger("opsbot.mcp")
TOKEN_KEY = "opsbot.token"
KEEPALIVE_S = 5.0  # progress notifications while a run waits for its approval


@dataclass
class McpDeps:
    bot: BotDeps
    tokens: TokenStore
    audit: Any
    team: str
    channel: str | None  # OPSBOT_MCP_CHANNEL


def build_server(deps: McpDeps) -> Server:
    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        token = _token(ctx)
        return types.ListToolsResult(tools=[_tool(t, a) for t, a in _offered(deps, token)])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return await _call(deps, _token(ctx), params.name, params.arguments or {}, ctx)

    return Server("opsbot", version="1", on_list_tools=list_tools, on_call_tool=call_tool,
                  instructions="opsbot's SRE actions; risky ones wait for a Slack approval.")


def _token(ctx: Any) -> Token:
    request = getattr(ctx, "request", None)
    token = request.scope.get(TOKEN_KEY) if request is not None else None
    if not isinstance(token, Token):  # the endpoint authenticates before anything runs
        raise PermissionError("unauthenticated MCP request")
    return token


def _offered(deps: McpDeps, token: Token) -> list[tuple[Toolset[Any], Action[Any]]]:
    return [(t, a) for t in deps.bot.catalog.enabled() if token.allows_toolset(t.name)
            for a in t.actions if a.tier <= token.max_tier]


def _tool(toolset: Toolset[Any], action: Action[Any]) -> types.Tool:
    return types.Tool(
        name=tool_name(toolset.name, action.name),
        description=f"[tier {action.tier.label}] {action.description}",
        input_schema=action.params.model_json_schema(),
        annotations=types.ToolAnnotations(
            read_only_hint=action.tier == Tier.OBSERVE,
            destructive_hint=action.tier >= Tier.SANDBOX_EXECUTE,
        ),
    )


async def _call(deps: McpDeps, token: Token, name: str, args: dict[str, Any],
                ctx: Any) -> types.CallToolResult:
    toolset, _, action = name.partition("__")
    call = Call(id="mcp", toolset=toolset, action=action, params=args)
    refusal = _refusal(deps, token, call)
    if refusal:
        await deps.audit.record("mcp.refused", None, token.user, token=token.id, tool=name,
                                reason=refusal)
        return _error(refusal)
    channel = token.channels[0] if token.channels else deps.channel
    if not channel:
        return _error(messages.MCP_NO_CHANNEL)
    task = Task(source=Source.MCP, team=deps.team, channel=channel, user=token.user,
                text=f"{toolset} {action} (MCP, token {token.id})",
                call={"toolset": toolset, "action": action, "params": args})
    run = await deps.bot.submit(task, tell=False)
    if isinstance(run, Refused):
        return _error(run.sentence)
    log.info("mcp.call", run_id=run.run_id, tool=name, token=token.id, user=token.user)
    try:
        state = await _wait(deps, run.run_id, ctx)
    except asyncio.CancelledError:  # the client cancelled or went away: nobody wants it now
        await asyncio.shield(deps.bot.runs.end(run.run_id, "the MCP client cancelled the call"))
        raise
    return await _result(deps, run.run_id, state)


def _refusal(deps: McpDeps, token: Token, call: Call) -> str:
    if not token.allows_toolset(call.toolset):
        return messages.mcp_out_of_scope(token.scope(), call.ref)
    decision = evaluate(deps.bot.policy, deps.bot.catalog, call, Requester(user=token.user),
                        Channel(id=token.channels[0] if token.channels else deps.channel or ""),
                        Proposer.MODEL)  # an MCP client is an agent: the run reviews it so too
    if decision.verdict is Verdict.DENY:
        return decision.reason
    if decision.tier > token.max_tier:
        return messages.mcp_tier_too_high(call.ref, decision.tier.label, token.max_tier.label)
    return ""


async def _wait(deps: McpDeps, run_id: str, ctx: Any) -> RunState:
    session = ctx.session
    steps = 0
    last_note = 0.0

    async def on_state(state: RunState) -> None:
        nonlocal steps
        steps += 1
        await session.report_progress(steps, None, await _state_note(deps, run_id, state))

    async def keepalive() -> None:
        nonlocal last_note, steps
        loop = asyncio.get_running_loop()
        if loop.time() - last_note >= KEEPALIVE_S:
            last_note = loop.time()
            found = await deps.bot.records.runs.get(run_id)
            if found and found[1] is RunState.WAITING:
                steps += 1
                await session.report_progress(steps, None,
                                              await _state_note(deps, run_id, found[1]))

    return await wait_for_end(deps.bot.records.runs, run_id, on_state, keepalive)


async def _state_note(deps: McpDeps, run_id: str, state: RunState) -> str:
    if state is RunState.WAITING:
        pending = await deps.bot.runs.desk.pending(run_id)
        who = "; ".join(p.rule.describe() for p in pending) or "an approver"
        return messages.mcp_waiting(run_id, who)
    return f"run {run_id} is {state.value}"


async def _result(deps: McpDeps, run_id: str, state: RunState) -> types.CallToolResult:
    calls = await reported_calls(deps.audit, run_id, patience_s=30)
    if not calls:
        return _error(messages.mcp_no_result(run_id, state.value))
    call = calls[0]
    text = call.output or call.status
    if call.note and call.note not in text:
        text = f"{text}\n({call.note})"
    if call.status in ("ok", "no_data"):
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])
    return _error(messages.mcp_failed(text, run_id))


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)],
                                is_error=True)


@asynccontextmanager
async def endpoint(deps: McpDeps) -> AsyncIterator[Any]:
    """The ``/mcp`` aiohttp handler, with the MCP library's session manager running.

    The manager's task group lives in a task of its own, so it is entered and left by the
    same task whichever task enters and leaves this context."""
    manager = StreamableHTTPSessionManager(app=build_server(deps), stateless=True,
                                           max_request_body_size=MAX_BODY)
    started, stop = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with manager.run():
            started.set()
            await stop.wait()

    holder = asyncio.create_task(hold(), name="mcp-endpoint")
    await asyncio.wait([holder, asyncio.ensure_future(started.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    if holder.done():
        holder.result()  # raises what kept the manager from starting
    try:
        yield _handler(manager, deps.tokens)
    finally:
        stop.set()
        await holder


def _handler(manager: StreamableHTTPSessionManager, tokens: TokenStore) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        secret = header[7:].strip() if header[:7].lower() == "bearer " else None
        token, problem = await authenticate(tokens, secret, datetime.now(UTC))
        if token is None:
            return web.json_response(
                {"error": "invalid_token", "error_description": problem}, status=401,
                headers={"WWW-Authenticate": f'Bearer error="invalid_token", '
                                             f'error_description="{problem}"'})
        user = AuthenticatedUser(AccessToken(token=token.id, client_id=token.id,
                                             scopes=list(token.toolsets), subject=token.user))
        return await asgi.serve(manager.handle_request, request,
                                {TOKEN_KEY: token, "user": user}, MAX_BODY)

    return handle
