"""The web console at ``/console``: read-only pages over the records, for auditors and incident
commanders who want to read what the bot did without scrolling Slack.

* ``/console/runs`` — runs, newest first, filtered by channel, state, source, requester, time;
* ``/console/runs/<id>`` — one run: its approvals (who may decide, who did) and its timeline
  from the audit log (who asked, each policy decision with its rule, approvals, credential
  leases, executions, the report);
* ``/console/approvals`` — approvals waiting for a decision, with who may decide.

Server-rendered HTML (``html.py``) and one stylesheet; no JavaScript, so the Content Security
Policy allows nothing but this origin's stylesheet and forms. Sign-in: Sign in with Slack
(OpenID Connect) or an operator token (``opsbot tokens create``); only the Slack users and user
groups in ``OPSBOT_CONSOLE_GROUPS`` get in (``auth.py``). The only POSTs are sign-in and sign-out,
each carrying a CSRF value; nothing on these pages changes a run.

It runs in every process that serves Slack (roles ``all`` and ``ingress``) and reads the
records only, so it works in both storage modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import web

from bot.directory import Directory
from bot.settings import Settings
from bot.tokens import RecordsTokens
from bot.webconsole.auth import Access, Signer, SlackOidc
from bot.webconsole.pages import routes
from graph.records import Records


@dataclass
class ConsoleDeps:
    records: Records
    access: Access
    tokens: RecordsTokens
    signer: Signer
    http: aiohttp.ClientSession
    oidc: SlackOidc | None = None
    secure_cookies: bool = False  # set when the public URL is https


DEPS = web.AppKey("console", ConsoleDeps)


def register(app: web.Application, deps: ConsoleDeps) -> None:
    app[DEPS] = deps
    app.router.add_routes(routes(DEPS))


def console_for(settings: Settings, records: Records, tokens: RecordsTokens, client,
                http: aiohttp.ClientSession, team: str) -> ConsoleDeps | None:
    """The console of this deployment, or None when ``OPSBOT_CONSOLE_GROUPS`` names nobody
    (then ``/console`` does not exist)."""
    allowed = [e for e in (settings.console_groups or "").split(",") if e.strip()]
    if not allowed:
        return None
    access = Access(allowed, Directory(client, groups=[e.strip() for e in allowed
                                                       if e.strip().startswith("S")]))
    secret = settings.console_secret
    signer = Signer(secret.get_secret_value().encode() if secret else None)
    public = (settings.public_url or f"http://127.0.0.1:{settings.port}").rstrip("/")
    return ConsoleDeps(records, access, tokens, signer, http, _oidc(settings, public, team),
                       secure_cookies=public.startswith("https://"))


def _oidc(settings: Settings, public: str, team: str) -> SlackOidc | None:
    if not (settings.slack_client_id and settings.slack_client_secret):
        return None
    base = settings.slack_oidc_url if settings.slack_oidc_url.endswith("/") else \
        settings.slack_oidc_url + "/"
    return SlackOidc(base, settings.slack_client_id,
                     settings.slack_client_secret.get_secret_value(),
                     f"{public}/console/oidc/callback", team)
