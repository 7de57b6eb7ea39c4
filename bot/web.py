"""The HTTP front door: ``POST /slack/events``, ``POST /webhooks/pagerduty`` (and
``/webhooks/alertmanager``, ``/webhooks/github``), ``/mcp``, ``/api/v1``,
``GET /healthz`` (liveness), ``GET /readyz`` (readiness), ``GET /metrics``.

Stock Bolt parses the body inside ``BoltRequest`` before checking anything, so a truncated JSON
body raises and the server answers 500 (which Slack retries). Here the body is size-limited,
the signature is checked on the raw bytes, and only then parsed; anything malformed is a 4xx
that starts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from opentelemetry.trace import INVALID_SPAN, SpanKind

from bot import alertmanager, github_webhooks, messages, metrics, pagerduty, telemetry
from bot.deps import ACKED
from bot.http_body import MAX_BODY, json_error, read_body
from graph import tracing

log = structlog.get_logger("opsbot.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def slack_handler(app: AsyncApp, signing_secret: str | None) -> Handler:
    verifier = SignatureVerifier(signing_secret) if signing_secret else None

    async def handle(request: web.Request) -> web.StreamResponse:
        acked = asyncio.Event()  # what the listeners hand off starts once the answer is out
        held = ACKED.set(acked)
        try:
            with _server_span(request) as span:  # a run started here continues this trace
                response = await verified(request)
                span.set_attribute("http.response.status_code", response.status)
            with contextlib.suppress(ConnectionResetError):  # Slack went away: it resends
                await response.prepare(request)
                await response.write_eof()
            return response
        finally:
            ACKED.reset(held)
            acked.set()

    async def verified(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        body = await read_body(request)
        if isinstance(body, web.Response):
            return _count(body, "too_large")
        if verifier is None or not verifier.is_valid_request(body, dict(request.headers)):
            return _count(json_error(401, "invalid request signature"), "bad_signature")
        try:
            bolt_request = AsyncBoltRequest(body=body.decode("utf-8"), query=request.query_string,
                                            headers=dict(request.headers))
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
            log.info("malformed slack request", error=type(e).__name__)
            return _count(json_error(400, "malformed request body"), "malformed")
        response = await app.async_dispatch(bolt_request)
        metrics.ACK_SECONDS.observe(time.perf_counter() - started)
        return _count(await to_aiohttp_response(response), str(response.status))

    return handle


def pagerduty_handler(secret: str, dedupe, incidents) -> Handler:
    """``POST /webhooks/pagerduty``: verify, de-duplicate on ``X-Webhook-Id``, hand off, 2xx."""

    async def delivered(request: web.Request) -> web.StreamResponse:
        body = await read_body(request)
        if isinstance(body, web.Response):
            return _pd(body, "too_large")
        signature = request.headers.get("X-PagerDuty-Signature")
        if not body or not signature:
            return _pd(json_error(400, "missing body or X-PagerDuty-Signature"), "unsigned")
        if not pagerduty.valid_signature(secret, body, signature):
            return _pd(json_error(403, "invalid X-PagerDuty-Signature"), "bad_signature")
        try:
            event = pagerduty.parse_webhook(body)
        except pagerduty.WebhookError as e:
            return _pd(web.json_response({"ok": True, "ignored": str(e)}, status=202), "ignored")
        delivery = request.headers.get("X-Webhook-Id") or event.id
        if delivery and not await dedupe.first_time(f"pagerduty:{delivery}"):
            return _pd(web.json_response({"ok": True, "duplicate": True}), "duplicate")
        incidents.webhook(event)
        return _pd(web.json_response({"ok": True}, status=202), "accepted")

    return _traced(delivered)


def alertmanager_handler(credentials: alertmanager.Credentials, groups) -> Handler:
    """``POST /webhooks/alertmanager``: check the credentials, parse, hand off, 2xx."""

    async def delivered(request: web.Request) -> web.StreamResponse:
        if not credentials.accept(request.headers.get("Authorization")):
            return _am(web.json_response(
                {"ok": False, "error": ALERTMANAGER_UNAUTHORISED}, status=401,
                headers={"WWW-Authenticate": 'Bearer realm="opsbot", Basic realm="opsbot"'}),
                "bad_auth")
        body = await read_body(request)
        if isinstance(body, web.Response):
            return _am(body, "too_large")
        try:
            note = alertmanager.parse(body)
        except alertmanager.PayloadError as e:
            return _am(json_error(400, str(e)), "malformed")
        groups.received(note)
        return _am(web.json_response({"ok": True}, status=202), "accepted")

    return _traced(delivered)


def github_handler(secret: str, dedupe, runs) -> Handler:
    """``POST /webhooks/github``: verify ``X-Hub-Signature-256`` on the whole body, parse,
    de-duplicate on ``X-GitHub-Delivery``, hand off, 2xx."""

    async def delivered(request: web.Request) -> web.StreamResponse:
        body = await read_body(request)
        if isinstance(body, web.Response):
            return _gh(body, "too_large")
        signature = request.headers.get("X-Hub-Signature-256")
        if not body or not signature:
            return _gh(json_error(401, messages.GITHUB_UNSIGNED), "unsigned")
        if not github_webhooks.valid_signature(secret, body, signature):
            return _gh(json_error(401, messages.GITHUB_BAD_SIGNATURE), "bad_signature")
        try:
            event = github_webhooks.parse(request.headers.get("X-GitHub-Event", ""), body)
        except github_webhooks.EventError as e:
            return _gh(json_error(400, str(e)), "malformed")
        delivery = request.headers.get("X-GitHub-Delivery")
        if delivery and not await dedupe.first_time(f"github:{delivery}"):
            return _gh(web.json_response({"ok": True, "duplicate": True}), "duplicate")
        ignored = (event.reason if isinstance(event, github_webhooks.Ignored)
                   else runs.accept(event))
        if ignored:
            return _gh(web.json_response({"ok": True, "ignored": ignored}, status=202), "ignored")
        return _gh(web.json_response({"ok": True}, status=202), "accepted")

    return _traced(delivered)


def _gh(response: web.Response, outcome: str) -> web.Response:
    metrics.webhook("github", outcome)
    return response


def _traced(handler: Handler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        with _server_span(request) as span:  # a run started here continues this trace
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            return response

    return handle


def _am(response: web.Response, outcome: str) -> web.Response:
    metrics.webhook("alertmanager", outcome)
    return response


def _server_span(request: web.Request):
    if not telemetry.active():  # a no-op span still costs ~5 % of an ack
        return contextlib.nullcontext(INVALID_SPAN)
    return tracing.tracer.start_as_current_span(
        f"{request.method} {request.path}", kind=SpanKind.SERVER,
        attributes=request_attributes(request.method, request.path))


def request_attributes(method: str, path: str) -> dict[str, str]:
    """An HTTP request's server span attributes (OpenTelemetry's HTTP conventions)."""
    return {"http.request.method": method, "url.path": path}


def _pd(response: web.Response, outcome: str) -> web.Response:
    metrics.webhook("pagerduty", outcome)
    return response


def _count(response: web.Response, outcome: str) -> web.Response:
    metrics.SLACK_REQUESTS.labels(outcome=outcome).inc()
    return response


Readiness = Callable[[], Awaitable[dict[str, str]]]
READY = web.AppKey("ready", Readiness)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: 200 while the process serves HTTP (restart it when this stops answering)."""
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 503 with the reason until everything this process needs answers (the
    database; Slack auth; for workers the Docker engine with the sandbox image, and Vault)."""
    checks = await request.app[READY]() if READY in request.app else {}
    problems = {k: v for k, v in checks.items() if v != "ok"}
    status = 503 if problems else 200
    return web.json_response({"ok": not problems, "problems": problems, "checks": checks},
                             status=status)


METRICS_TOKEN = web.AppKey("metrics_token", str)
REFRESH = web.AppKey("metrics_refresh", metrics.Refresh)
ALERTMANAGER_UNAUTHORISED = messages.ALERTMANAGER_UNAUTHORISED
METRICS_UNAUTHORISED = "GET /metrics needs Authorization: Bearer <OPSBOT_METRICS_TOKEN>"


async def prometheus(request: web.Request) -> web.Response:
    """Prometheus text; with ``OPSBOT_METRICS_TOKEN`` set, only for ``Authorization: Bearer``
    with that token (a scraper's ``bearer_token``)."""
    token = request.app.get(METRICS_TOKEN)
    if token and not _bearer(request, token):
        return web.json_response(
            {"ok": False, "error": METRICS_UNAUTHORISED}, status=401,
            headers={"WWW-Authenticate": 'Bearer realm="opsbot metrics"'})
    if REFRESH in request.app:
        await request.app[REFRESH]()
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _bearer(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())


def build_web(
    slack: Handler | None, pagerduty: Handler | None, ready: Readiness | None = None,
    mcp: Handler | None = None, metrics_token: str | None = None,
    refresh: metrics.Refresh | None = None,
    console: Callable[[web.Application], None] | None = None,
    webhooks: dict[str, Handler] | None = None,
    api: list[web.RouteDef] | None = None,
) -> web.Application:
    """``webhooks``: more ``POST /webhooks/<name>`` receivers (alertmanager, github)."""
    app = web.Application(client_max_size=MAX_BODY)
    if console is not None:
        console(app)  # /console (bot/webconsole)
    if refresh is not None:
        app[REFRESH] = refresh
    if ready is not None:
        app[READY] = ready
    if metrics_token:
        app[METRICS_TOKEN] = metrics_token
    if slack is not None:
        app.router.add_post("/slack/events", slack)
    if pagerduty is not None:
        app.router.add_post("/webhooks/pagerduty", pagerduty)
    for name, handler in (webhooks or {}).items():
        app.router.add_post(f"/webhooks/{name}", handler)
    if mcp is not None:
        app.router.add_route("*", "/mcp", mcp)  # MCP streamable HTTP (bot/mcp_server.py)
    if api is not None:
        app.router.add_routes(api)  # the task API, /api/v1 (bot/api/)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    return app
