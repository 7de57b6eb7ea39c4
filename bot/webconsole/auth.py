"""Who may read the console: signed session cookies, Sign in with Slack (OpenID Connect), operator
tokens, and the access rule (configured Slack user groups or users).

* A session is a cookie ``opsbot_console`` holding the Slack user id, how they signed in, an
  expiry and a CSRF value, HMAC-signed with ``OPSBOT_CONSOLE_SECRET`` (random per process when
  unset, which signs everyone out at a restart and across replicas: set it when several
  ingress processes serve the console).
* Slack's OIDC flow: ``/openid/connect/authorize`` → our callback with ``code`` and ``state`` →
  ``openid.connect.token`` → an ``id_token`` (RS256, Slack's published keys) whose audience is
  our client id, issuer ``https://slack.com``, nonce ours, and team this bot's workspace.
* Access is checked on every request, not only at sign-in: leaving the group closes the door.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt

from bot.directory import Directory

SESSION_COOKIE = "opsbot_console"
FLOW_COOKIE = "opsbot_console_oidc"
SESSION_S = 8 * 3600
FLOW_S = 600
ISSUER = "https://slack.com"
USER_CLAIM = "https://slack.com/user_id"
TEAM_CLAIM = "https://slack.com/team_id"


class SignInError(Exception):
    """Sign-in failed; ``str(e)`` is a sentence for the person signing in."""


@dataclass(frozen=True)
class Session:
    user: str
    via: str  # "slack" or "token"
    expires: float
    csrf: str


class Signer:
    """HMAC-SHA256 over a JSON body: ``<body>.<mac>``, both URL-safe base64."""

    def __init__(self, key: bytes | None = None):
        self.key = key or secrets.token_bytes(32)

    def sign(self, data: dict[str, Any]) -> str:
        body = _b64(json.dumps(data, separators=(",", ":")).encode())
        return f"{body}.{_b64(self._mac(body))}"

    def open(self, value: str | None) -> dict[str, Any] | None:
        body, _, mac = (value or "").partition(".")
        if not body or not hmac.compare_digest(mac, _b64(self._mac(body))):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) and data.get("exp", 0) > time.time() else None

    def _mac(self, body: str) -> bytes:
        return hmac.new(self.key, body.encode(), hashlib.sha256).digest()


def new_session(signer: Signer, user: str, via: str) -> tuple[str, Session]:
    session = Session(user, via, time.time() + SESSION_S, secrets.token_urlsafe(16))
    cookie = signer.sign({"u": user, "via": via, "exp": session.expires, "csrf": session.csrf})
    return cookie, session


def read_session(signer: Signer, cookie: str | None) -> Session | None:
    data = signer.open(cookie)
    if data is None or not isinstance(data.get("u"), str):
        return None
    return Session(data["u"], str(data.get("via", "")), float(data["exp"]), str(data["csrf"]))


class Access:
    """Console readers: Slack user ids named directly, or members of the Slack user groups."""

    def __init__(self, allowed: Iterable[str], directory: Directory):
        entries = [e.strip() for e in allowed if e.strip()]
        self.users = frozenset(e for e in entries if not e.startswith("S"))
        self.groups = tuple(e for e in entries if e.startswith("S"))
        self.directory = directory

    async def allows(self, user: str) -> bool:
        return user in self.users or bool(await self.directory.groups_of(user))


@dataclass(frozen=True)
class SlackOidc:
    """The OpenID Connect client of the console (``SLACK_CLIENT_ID`` / ``SLACK_CLIENT_SECRET``)."""

    base: str  # https://slack.com/ (OPSBOT_SLACK_OIDC_URL)
    client_id: str
    client_secret: str
    redirect_uri: str
    team: str  # this bot's workspace: nobody from another one signs in

    def authorize_url(self, state: str, nonce: str) -> str:
        query = urlencode({"response_type": "code", "scope": "openid profile",
                           "client_id": self.client_id, "state": state, "nonce": nonce,
                           "redirect_uri": self.redirect_uri, "team": self.team})
        return f"{self.base}openid/connect/authorize?{query}"

    async def user_for(self, session: aiohttp.ClientSession, code: str, nonce: str) -> str:
        """Exchange ``code`` and verify the ``id_token``; the Slack user id it names."""
        form = {"client_id": self.client_id, "client_secret": self.client_secret,
                "code": code, "redirect_uri": self.redirect_uri, "grant_type": "authorization_code"}
        async with session.post(f"{self.base}api/openid.connect.token", data=form) as response:
            answer = await response.json(content_type=None)
        if not answer.get("ok") or not answer.get("id_token"):
            raise SignInError(f"Slack refused the sign-in ({answer.get('error', 'no id_token')}).")
        claims = await self._verified(session, answer["id_token"])
        if claims.get("nonce") != nonce:
            raise SignInError("The sign-in answer does not belong to this sign-in; try again.")
        if self.team and claims.get(TEAM_CLAIM) != self.team:
            raise SignInError("That Slack account belongs to another workspace.")
        user = claims.get(USER_CLAIM) or ""
        if not user:
            raise SignInError("Slack's answer names no user; try again.")
        return str(user)

    async def _verified(self, session: aiohttp.ClientSession, token: str) -> dict[str, Any]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            async with session.get(f"{self.base}openid/connect/keys") as response:
                keys = (await response.json(content_type=None)).get("keys", [])
            key = next(jwt.PyJWK(k).key for k in keys if k.get("kid") == kid)
            return jwt.decode(token, key, algorithms=["RS256"], audience=self.client_id,
                              issuer=ISSUER, options={"require": ["exp", "iat", "sub"]})
        except (StopIteration, jwt.PyJWTError, aiohttp.ClientError, ValueError) as e:
            raise SignInError(f"Slack's sign-in token did not verify ({type(e).__name__}).") \
                from None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
