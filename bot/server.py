"""``opsbot serve`` and ``opsbot worker``: the processes, by role.

* ``serve`` (role ``all``): the Slack front-end (HTTP or Socket Mode) plus the HTTP extras and
  the run workers, in one process — embedded mode's only shape, and valid in scale-out too.
* ``serve --role ingress`` (scale-out): Slack, webhooks and health; acks and enqueues; needs
  neither Docker nor Vault.
* with ``OPSBOT_ACCEPTOR_PORT`` (both roles that serve Slack over HTTP), Slack's requests are
  answered on that port by a second process that does nothing else (``bot/acceptor.py``,
  ``bot/forwarding.py``).
* ``worker`` (scale-out): runs jobs (graph, sandbox, Vault), posts progress through the Slack
  Web API, serves health and metrics.

``running_bot`` is the same start-up as a context manager, used by ``serve`` and by tests that
drive the whole bot over real HTTP.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from functools import partial
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, closing, nullcontext
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot import telemetry, webconsole
from bot.api import ApiDeps, RateLimit, routes
from bot.app import build_app, slack_client
from bot.deps import BotDeps, described
from bot.directory import Directory
from bot.errors import ConfigError
from bot.forwarding import Acceptor
from bot.incidents import Incidents
from bot.runbooks import runbooks_for
from bot.settings import Settings
from bot.slack_surface import Pace, SlackSurface
from bot.mcp_server import McpDeps
from bot.metrics import scrape_time
from bot.mcp_server import endpoint as mcp_endpoint
from bot.web import (
    alertmanager_handler,
    build_web,
    github_handler,
    pagerduty_handler,
    slack_handler,
)
from bot.github_runs import GithubRuns
from bot.alert_groups import AlertGroupRuns
from bot.alertmanager import Credentials
from bot.wiring import Role, Runtime, runtime

log = structlog.get_logger("opsbot.server")


@dataclass
class RunningBot:
    app: AsyncApp | None
    runtime: Runtime
    deps: BotDeps | None
    port: int
    acceptor: Acceptor | None = None  # OPSBOT_ACCEPTOR_PORT's process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def running_bot(
    settings: Settings, host: str = "0.0.0.0", status_interval: float = 1.0, runbooks=None,
    incident_grace_s: float = 5.0, role: Role = Role.ALL, status_pace: Pace = asyncio.sleep,
) -> AsyncIterator[RunningBot]:
    """``status_interval``: seconds between edits of a run's status message; ``status_pace``
    waits out the rest of one (tests hold it to show what does not wait for it)."""
    session = aiohttp.ClientSession()
    client = slack_client(settings, session)
    surface = SlackSurface(client, interval=status_interval, pace=status_pace)
    async with (session, AsyncExitStack() as stack):
        stack.enter_context(telemetry.exporting(settings))  # closed last: spans of shutdown too
        rt = await stack.enter_async_context(runtime(settings, surface, runbooks=runbooks,
                                                     role=role))
        team = await _team_id(client)
        if rt.scheduler is not None:  # a schedule's requester, described like a Slack one
            rt.scheduler.prepare = partial(described, Directory(
                client, groups=rt.policy.slack_groups()), team=team)
        app = deps = slack = pd = mcp = console = api = acceptor = None
        hooks: dict = {}
        if role is not Role.WORKER:
            directory = Directory(client, groups=rt.policy.slack_groups())
            deps = BotDeps(settings, rt.catalog, rt.policy, rt.runs, rt.records, directory,
                           schedules=rt.schedules)
            incidents = Incidents(deps, team=team, grace_s=incident_grace_s)
            mcp = await stack.enter_async_context(mcp_endpoint(
                McpDeps(deps, rt.tokens, rt.audit, team, settings.mcp_channel)))
            app = build_app(settings, deps, client, incidents)
            api = routes(ApiDeps(deps, rt.tokens, RateLimit(settings.api_rate), team))
            console = webconsole.console_for(settings, rt.records, rt.tokens, client, session,
                                             team)
            secret = settings.slack_signing_secret
            slack = None if settings.socket_mode else slack_handler(
                app, secret.get_secret_value() if secret else None)
            pd_secret = settings.pagerduty_webhook_secret
            pd = (pagerduty_handler(pd_secret.get_secret_value(), rt.records.dedupe, incidents)
                  if pd_secret else None)
            hooks = _webhooks(settings, deps, team)
            acceptor = _acceptor(settings, app, deps, host)
        scrape = settings.metrics_token.get_secret_value() if settings.metrics_token else None
        web_runner = web.AppRunner(build_web(slack, pd, lambda: _ready(rt, client, acceptor),
                                             mcp, scrape,
                                             scrape_time(rt.queue, rt.records),
                                             partial(webconsole.register, deps=console)
                                             if console else None, hooks, api),
                                   access_log=None)
        await web_runner.setup()
        site = web.TCPSite(web_runner, host, settings.port)
        await site.start()
        port = web_runner.addresses[0][1]
        socket_handler = None
        if settings.socket_mode and app is not None:
            socket_handler = AsyncSocketModeHandler(app, settings.slack_app_token.get_secret_value())
            await socket_handler.connect_async()
        log.info("listening", port=port, role=role.value,
                 mode="socket" if socket_handler else "http")
        if acceptor is not None:
            acceptor.start()
        try:
            yield RunningBot(app, rt, deps, port, acceptor)
        finally:
            if acceptor is not None:
                await acceptor.close()
            if socket_handler is not None:
                await socket_handler.close_async()
            await web_runner.cleanup()
            if deps is not None:
                await deps.drain()


def _acceptor(settings: Settings, app: AsyncApp, deps: BotDeps, host: str) -> Acceptor | None:
    """The process that answers Slack on ``OPSBOT_ACCEPTOR_PORT`` (when set, over HTTP)."""
    secret = settings.slack_signing_secret
    if settings.acceptor_port is None or settings.socket_mode or secret is None:
        return None
    return Acceptor(app, deps.spawn, secret.get_secret_value(), host, settings.acceptor_port,
                    settings.log_level)


def _webhooks(settings: Settings, deps: BotDeps, team: str) -> dict:
    """The ``/webhooks/<name>`` receivers whose credentials are set."""
    hooks = {}
    token, password = settings.alertmanager_token, settings.alertmanager_password
    if token or password:
        credentials = Credentials(token.get_secret_value() if token else None,
                                  settings.alertmanager_user,
                                  password.get_secret_value() if password else None)
        hooks["alertmanager"] = alertmanager_handler(credentials, AlertGroupRuns(deps, team))
    if settings.github_webhook_secret:
        hooks["github"] = github_handler(settings.github_webhook_secret.get_secret_value(),
                                         deps.records.dedupe, GithubRuns(deps, team))
    return hooks


async def serve(settings: Settings, role: Role = Role.ALL) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runbooks = runbooks_for(settings) if role.works else None
    with closing(runbooks) if runbooks is not None else nullcontext():
        async with running_bot(settings, runbooks=runbooks, role=role):
            _freeze_start_up_objects()
            await stop.wait()


def _freeze_start_up_objects() -> None:
    """Move everything start-up made (modules, schemas, the graph, clients) out of the
    collector's reach, so a full collection walks only what came later. Unfrozen, a worker's
    full collections took 200-350 ms each in the click bench, a pause that every request and
    drive in the process waited out; frozen, 30-60 ms. (No ``gc.collect()`` first: it costs
    0.2-0.5 s of start-up, and the collections during the imports already ran.)"""
    gc.freeze()
    log.info("gc.frozen", objects=gc.get_freeze_count())


async def _ready(rt: Runtime, client, acceptor: Acceptor | None = None) -> dict[str, str]:
    checks = await rt.readiness()
    if acceptor is not None:
        checks["acceptor"] = acceptor.readiness()
    try:
        await client.auth_test()
        checks["slack"] = "ok"
    except (SlackApiError, aiohttp.ClientError, asyncio.TimeoutError) as e:
        checks["slack"] = f"Slack auth.test failed ({type(e).__name__})"
    return checks


async def _team_id(client) -> str:
    """The workspace id (for thread ids of runs that start from a webhook)."""
    try:
        return (await client.auth_test()).get("team_id") or ""
    except SlackApiError as e:
        raise ConfigError(f"SLACK_BOT_TOKEN was refused by Slack ({e.response.get('error')}); "
                          "copy the Bot User OAuth Token again.") from None
