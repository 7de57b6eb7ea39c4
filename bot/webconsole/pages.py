"""The console's handlers: sign-in and sign-out, then the three read-only pages.

Every response carries the console's security headers (:func:`_headers`); every page handler is
wrapped by :func:`_reader`, which sends visitors without a session to the sign-in page and
refuses signed-in people outside the allowed groups (checked on each request).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.tokens import authenticate
from bot.webconsole import html
from bot.webconsole.auth import (
    FLOW_COOKIE,
    FLOW_S,
    SESSION_COOKIE,
    Session,
    SignInError,
    new_session,
    read_session,
)
from graph.records.base import RunFilter
from graph.surface import RunState

CSRF_COOKIE = "opsbot_console_csrf"
STYLESHEET = Path(__file__).with_name("console.css")
ICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
        '<rect width="16" height="16" rx="3" fill="#1f2a37"/></svg>')
HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
NOT_ALLOWED = ("You are signed in as {user}, who is not among the people allowed to read the "
               "console (OPSBOT_CONSOLE_GROUPS).")
TOKEN_REFUSED = "That operator token was refused ({why})."
STALE_FORM = "That form has expired; sign in again."
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Page = Callable[[web.Request, Any], Awaitable[tuple[str, str]]]


def routes(key: web.AppKey) -> list[web.RouteDef]:
    def reader(page: Page) -> Handler:
        return _headers(_reader(key, page))

    return [
        web.get("/console", _headers(_home)),
        web.get("/console/static/console.css", _headers(_stylesheet)),
        web.get("/console/static/favicon.svg", _headers(_icon)),
        web.get("/console/login", _headers(lambda r: _login_page(r, key))),
        web.post("/console/login", _headers(lambda r: _token_login(r, key))),
        web.get("/console/login/slack", _headers(lambda r: _slack_login(r, key))),
        web.get("/console/oidc/callback", _headers(lambda r: _slack_callback(r, key))),
        web.post("/console/logout", _headers(lambda r: _logout(r, key))),
        web.get("/console/runs", reader(_runs)),
        web.get("/console/runs/{run_id}", reader(_run)),
        web.get("/console/approvals", reader(_approvals)),
    ]


def _headers(handler: Handler) -> Handler:
    async def with_headers(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as e:  # a 404 or 403 with its sentence
            response = web.Response(status=e.status, text=e.text or e.reason)
        response.headers.update(HEADERS)
        return response

    return with_headers


def _reader(key: web.AppKey, page: Page) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        deps = request.app[key]
        session = read_session(deps.signer, request.cookies.get(SESSION_COOKIE))
        if session is None:
            return _redirect("/console/login")
        if not await deps.access.allows(session.user):
            body = html.page("Not allowed", f"<p>{html.text(NOT_ALLOWED.format(user=session.user))}</p>",
                             session.user, session.csrf)
            return _html(body, 403)
        try:
            return _html(html.page(*await page(request, deps), session.user, session.csrf))
        except ValueError as e:  # a filter that does not parse: say which
            return _html(html.page("Bad request", f"<p>{html.text(str(e))}</p>", session.user,
                                   session.csrf), 400)

    return handle


async def _home(request: web.Request) -> web.StreamResponse:
    return _redirect("/console/runs")


async def _stylesheet(request: web.Request) -> web.StreamResponse:
    return web.Response(text=STYLESHEET.read_text(), content_type="text/css")


async def _icon(request: web.Request) -> web.StreamResponse:
    return web.Response(text=ICON, content_type="image/svg+xml")


# pages ------------------------------------------------------------------------------------


async def _runs(request: web.Request, deps: Any) -> tuple[str, str]:
    values = {k: request.query.get(k, "").strip()[:100]
              for k in ("channel", "state", "source", "requester", "since", "until")}
    where = RunFilter(channel=values["channel"] or None, state=_state(values["state"]),
                      source=values["source"] or None, requester=values["requester"] or None,
                      since=_moment("since", values["since"]),
                      until=_moment("until", values["until"]), limit=200)
    runs = await deps.records.runs.listing(where)
    return "Runs", html.runs_table(runs, values)


async def _run(request: web.Request, deps: Any) -> tuple[str, str]:
    records = deps.records
    run_id = request.match_info["run_id"]
    found = await records.runs.listing(RunFilter(run_id=run_id, limit=1))
    if not found:
        raise web.HTTPNotFound(text=f"There is no run {run_id}.")
    story = await records.audit.story(run_id)
    approvals = await records.approvals.for_run(run_id)
    return f"Run {run_id}", html.run_page(found[0], story, approvals)


async def _approvals(request: web.Request, deps: Any) -> tuple[str, str]:
    pending = await deps.records.approvals.pending()
    return "Pending approvals", html.approvals_table(pending)


def _state(value: str) -> RunState | None:
    if not value:
        return None
    try:
        return RunState(value)
    except ValueError:
        raise ValueError(f"state must be one of {', '.join(s.value for s in RunState)}.") from None


def _moment(name: str, value: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be a date and time like 2026-01-31T14:00.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# signing in and out --------------------------------------------------------------------------


async def _login_page(request: web.Request, key: web.AppKey, problem: str = "",
                      status: int = 200) -> web.Response:
    deps = request.app[key]
    csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(16)
    slack = "/console/login/slack" if deps.oidc is not None else None
    response = _html(html.sign_in(slack, csrf, problem), status)
    _cookie(response, deps, CSRF_COOKIE, csrf, FLOW_S)
    return response


async def _token_login(request: web.Request, key: web.AppKey) -> web.StreamResponse:
    deps = request.app[key]
    form = await request.post()
    if not _same(form.get("csrf"), request.cookies.get(CSRF_COOKIE)):
        return await _login_page(request, key, STALE_FORM, 403)
    token, why = await authenticate(deps.tokens, str(form.get("token", "")).strip())
    if token is None:
        return await _login_page(request, key, TOKEN_REFUSED.format(why=why), 401)
    return await _signed_in(request, key, token.user, "token")


async def _slack_login(request: web.Request, key: web.AppKey) -> web.StreamResponse:
    deps = request.app[key]
    if deps.oidc is None:
        raise web.HTTPNotFound(text="Sign in with Slack is not configured.")
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    response = _redirect(deps.oidc.authorize_url(state, nonce), 302)
    flow = deps.signer.sign({"state": state, "nonce": nonce,
                             "exp": datetime.now(UTC).timestamp() + FLOW_S})
    _cookie(response, deps, FLOW_COOKIE, flow, FLOW_S)
    return response


async def _slack_callback(request: web.Request, key: web.AppKey) -> web.StreamResponse:
    deps = request.app[key]
    flow = deps.signer.open(request.cookies.get(FLOW_COOKIE))
    if deps.oidc is None or flow is None or not _same(request.query.get("state"), flow["state"]):
        return await _login_page(request, key, STALE_FORM, 400)
    if "error" in request.query or "code" not in request.query:
        return await _login_page(request, key, "Slack did not sign you in; try again.", 401)
    try:
        user = await deps.oidc.user_for(deps.http, request.query["code"], flow["nonce"])
    except SignInError as e:
        return await _login_page(request, key, str(e), 401)
    response = await _signed_in(request, key, user, "slack")
    response.del_cookie(FLOW_COOKIE, path="/console")
    return response


async def _signed_in(request: web.Request, key: web.AppKey, user: str,
                     via: str) -> web.StreamResponse:
    deps = request.app[key]
    if not await deps.access.allows(user):
        return await _login_page(request, key, NOT_ALLOWED.format(user=user), 403)
    cookie, session = new_session(deps.signer, user, via)
    response = _redirect("/console/runs")
    _cookie(response, deps, SESSION_COOKIE, cookie, int(session.expires - datetime.now(UTC).timestamp()))
    return response


async def _logout(request: web.Request, key: web.AppKey) -> web.StreamResponse:
    deps = request.app[key]
    session = read_session(deps.signer, request.cookies.get(SESSION_COOKIE))
    form = await request.post()
    if session is not None and not _same(form.get("csrf"), session.csrf):
        raise web.HTTPForbidden(text=STALE_FORM)
    response = _redirect("/console/login")
    response.del_cookie(SESSION_COOKIE, path="/console")
    return response


# helpers -----------------------------------------------------------------------------------


def _redirect(location: str, status: int = 303) -> web.Response:
    return web.Response(status=status, headers={"Location": location})


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def _cookie(response: web.StreamResponse, deps: Any, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/console", httponly=True,
                        samesite="Lax", secure=deps.secure_cookies)


def _same(given: Any, expected: str | None) -> bool:
    return bool(expected) and isinstance(given, str) and secrets.compare_digest(given, expected)
