"""The task API's handlers (aiohttp): authenticate, rate-limit, validate, hand to the run
manager exactly as ``/ops`` and ``/mcp`` do, answer with the models of ``bot/api/models.py``.

Who may do what: the bearer token's Slack user is the requester (policy sees them as in
Slack); the token narrows it (``toolsets``, ``max_tier``, ``channels``). A typed command is
checked against both before anything starts: outside the token's toolsets, above its max tier,
or denied by policy → 403 with the sentence (audited as ``api.refused``); a gated command
starts and waits for its approval card in Slack. A question lets the agent choose actions the
token's scope can't be checked against in advance, so only a token without scope limits may
ask one. A token sees (and cancels) only its own user's runs; anyone else's id is a 404.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from bot import messages
from bot.api import models
from bot.api.limits import RateLimit
from bot.api.openapi import PROBLEM, document
from bot.deps import BotDeps
from bot.tokens import Token, TokenStore, authenticate
from bot.http_body import read_body
from graph import commands
from graph.outcome import POLL_S, reported
from graph.policy import Channel, Proposer, Requester, Verdict, evaluate
from graph.runs import CANCELLED, Refused
from graph.surface import RunRef, RunState
from graph.task import Source, Task
from tools.base import Tier
from tools.catalog import Call, describe_validation

log = structlog.get_logger("opsbot.api")
TOKEN = web.AppKey("api_token", Token)
KEEPALIVE_S = 15.0


@dataclass
class ApiDeps:
    bot: BotDeps
    tokens: TokenStore
    limit: RateLimit
    team: str


class Problem(Exception):
    """An answer other than success: becomes ``application/problem+json``."""

    def __init__(self, status: int, title: str, detail: str = "",
                 headers: dict[str, str] | None = None):
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.headers = status, title, detail, headers or {}

    def response(self) -> web.Response:
        body = models.Problem(title=self.title, status=self.status, detail=self.detail)
        return web.Response(status=self.status, text=body.model_dump_json(),
                            content_type=PROBLEM, headers=self.headers)


def routes(deps: ApiDeps) -> list[web.RouteDef]:
    guarded = lambda handler: _guarded(deps, handler)  # noqa: E731
    return [web.get("/api/v1/openapi.json", openapi),
            web.post("/api/v1/runs", guarded(start)),
            web.get("/api/v1/runs/{run_id}", guarded(show)),
            web.get("/api/v1/runs/{run_id}/events", guarded(events)),
            web.post("/api/v1/runs/{run_id}/cancel", guarded(cancel))]


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


def _guarded(deps: ApiDeps, handler):
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            token = await _token(deps, request)
            return await handler(deps, token, request)
        except Problem as problem:
            return problem.response()

    return handle


async def _token(deps: ApiDeps, request: web.Request) -> Token:
    header = request.headers.get("Authorization", "")
    secret = header[7:].strip() if header[:7].lower() == "bearer " else None
    token, why = await authenticate(deps.tokens, secret, datetime.now(UTC))
    if token is None:
        raise Problem(401, "Unauthorized", why, {"WWW-Authenticate": 'Bearer realm="opsbot"'})
    wait = deps.limit.wait(token.id)
    if wait:
        raise Problem(429, "Too Many Requests", messages.api_rate_limited(wait),
                      {"Retry-After": str(wait)})
    return token


# POST /runs ------------------------------------------------------------------------------


async def start(deps: ApiDeps, token: Token, request: web.Request) -> web.Response:
    asked = await _request(request)
    channel = asked.channel or (token.channels[0] if token.channels else "")
    refusal = _scope_refusal(deps, token, asked, channel)
    if refusal:
        await deps.bot.records.audit.record("api.refused", None, token.user, token=token.id,
                                            text=asked.text, reason=refusal)
        raise Problem(403, "Forbidden", refusal)
    task = Task(source=Source.API, team=deps.team, channel=channel, user=token.user,
                text=asked.text)
    run = await deps.bot.submit(task, tell=False)
    if isinstance(run, Refused):
        raise Problem(429, "Too Many Requests", run.sentence, {"Retry-After": "60"})
    assert isinstance(run, RunRef)
    log.info("api.run", run_id=run.run_id, token=token.id, user=token.user)
    view = await _view(deps, run.run_id)
    return web.Response(status=202, text=view.model_dump_json(), content_type="application/json",
                        headers={"Location": f"/api/v1/runs/{run.run_id}"})


async def _request(request: web.Request) -> models.RunRequest:
    if request.content_type != "application/json":
        raise Problem(415, "Unsupported Media Type", messages.API_JSON_ONLY)
    body = await read_body(request)
    if isinstance(body, web.Response):
        raise Problem(413, "Content Too Large", messages.API_TOO_LARGE)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "Bad Request", messages.API_NOT_JSON) from None
    try:
        return models.RunRequest.model_validate(data)
    except ValidationError as e:
        raise Problem(422, "Unprocessable Content", describe_validation(e)) from None


def _scope_refusal(deps: ApiDeps, token: Token, asked: models.RunRequest, channel: str) -> str:
    if not channel:
        return messages.API_NO_CHANNEL
    if token.channels and channel not in token.channels:
        return messages.api_channel_out_of_scope(channel, token.channels)
    if asked.question is not None:
        scoped = bool(token.toolsets) or token.max_tier < Tier.PRODUCTION
        return messages.api_question_scoped(token.scope()) if scoped else ""
    return _command_refusal(deps, token, asked.text, channel)


def _command_refusal(deps: ApiDeps, token: Token, text: str, channel: str) -> str:
    try:
        parsed = commands.parse(text, deps.bot.catalog)
    except commands.ParseError as e:
        return str(e)
    if not isinstance(parsed, commands.RunAction):
        return messages.API_NOT_A_COMMAND
    call = Call(id="api", toolset=parsed.toolset, action=parsed.action, params=parsed.params)
    if not token.allows_toolset(call.toolset):
        return messages.mcp_out_of_scope(token.scope(), call.ref)
    decision = evaluate(deps.bot.policy, deps.bot.catalog, call, Requester(user=token.user),
                        Channel(id=channel), Proposer.PERSON)
    if decision.verdict is Verdict.DENY:
        return decision.reason
    if decision.tier > token.max_tier:
        return messages.mcp_tier_too_high(call.ref, decision.tier.label, token.max_tier.label)
    return ""


# GET /runs/{id}, events, cancel -----------------------------------------------------------


async def show(deps: ApiDeps, token: Token, request: web.Request) -> web.Response:
    view = await _view(deps, await _own(deps, token, request))
    return web.json_response(text=view.model_dump_json())


async def cancel(deps: ApiDeps, token: Token, request: web.Request) -> web.Response:
    run_id = await _own(deps, token, request)
    groups = await deps.bot.directory.groups_of(token.user)
    message = await deps.bot.runs.cancel(run_id, token.user, groups)
    if message != CANCELLED.format(run_id=run_id):
        raise Problem(409, "Conflict", message)
    found = await deps.bot.records.runs.get(run_id)
    state = found[1] if found else RunState.CANCELLED
    body = models.Cancelled(id=run_id, state=state, message=message)
    return web.json_response(text=body.model_dump_json())


async def events(deps: ApiDeps, token: Token, request: web.Request) -> web.StreamResponse:
    """``checklist`` events (the run's state and steps) on each change, a ``report`` event
    (the whole run) once it ended, then the stream closes."""
    run_id = await _own(deps, token, request)
    stream = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                         "Cache-Control": "no-cache"})
    await stream.prepare(request)
    try:
        await _follow(deps, run_id, stream)
    except ConnectionResetError:
        return stream  # the client went away
    await stream.write_eof()
    return stream


async def _follow(deps: ApiDeps, run_id: str, stream: web.StreamResponse) -> None:
    loop = asyncio.get_running_loop()
    last, quiet_since = "", loop.time()
    while True:
        row = await deps.bot.records.runs.row(run_id)
        if row is None:
            return
        view = models.Run.of(row.run, row.state, row.checklist, [], None)
        now = json.dumps({"state": view.state.value,
                          "steps": [s.model_dump(mode="json") for s in view.steps]})
        if now != last:
            await stream.write(_event("checklist", now))
            last, quiet_since = now, loop.time()
        if row.state.final:
            ended = await _view(deps, run_id, patience_s=30)
            await stream.write(_event("report", ended.model_dump_json()))
            return
        if loop.time() - quiet_since > KEEPALIVE_S:
            await stream.write(b": keep-alive\n\n")
            quiet_since = loop.time()
        await asyncio.sleep(POLL_S * 2)


def _event(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


async def _own(deps: ApiDeps, token: Token, request: web.Request) -> str:
    run_id = request.match_info["run_id"]
    found = await deps.bot.records.runs.get(run_id)
    if found is None or found[0].task.user != token.user:
        raise Problem(404, "Not Found", messages.api_no_run(run_id))
    return run_id


async def _view(deps: ApiDeps, run_id: str, patience_s: float = 0) -> models.Run:
    records = deps.bot.records
    row = await records.runs.row(run_id)
    assert row is not None
    approvals = await records.approvals.for_run(run_id)
    found = await reported(records.audit, run_id, patience_s=patience_s) if row.state.final \
        else None
    report = _report_of(found) if found else None
    return models.Run.of(row.run, row.state, row.checklist, approvals, report)


def _report_of(data: dict[str, Any]) -> models.RunReport:
    calls = [models.CallResult(**{k: c.get(k) or "" for k in models.CallResult.model_fields})
             for c in data.get("calls", [])]
    return models.RunReport(state=RunState(data["state"]), headline=data.get("headline", ""),
                            calls=calls)
