"""Sign in with Slack (OpenID Connect) on loopback, as Slack documents it:

* ``GET /openid/connect/authorize`` — Slack's consent page; here the person signing in is
  whoever :attr:`SlackOidcEmulator.user` says, and the browser is sent straight back to
  ``redirect_uri`` with a one-time ``code`` and the caller's ``state`` (or ``error=access_denied``
  when nobody is set);
* ``POST /api/openid.connect.token`` — the code (once, with the right client id, secret and
  redirect URI) for an access token and an ``id_token``: a JWT signed RS256 with this
  emulator's key, issuer ``https://slack.com``, audience the client id, the authorize request's
  nonce, and Slack's ``https://slack.com/user_id`` / ``team_id`` claims;
* ``GET /openid/connect/keys`` — the JWKS that verifies it.

Usage::

    with SlackOidcEmulator(client_id="123.456", client_secret="s", team="T1") as oidc:
        oidc.user = "UAPPR1"
        settings = Settings(slack_oidc_url=oidc.origin + "/", slack_client_id=..., ...)
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.server import Emulator

ISSUER = "https://slack.com"


class SlackOidcEmulator(Emulator):
    def __init__(self, client_id: str, client_secret: str, team: str):
        self.client_id, self.client_secret, self.team = client_id, client_secret, team
        self.user: str | None = None  # who signs in at the "consent page"
        self.claims: dict[str, Any] = {}  # extra or overriding id_token claims (tests of refusals)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = "kid-" + secrets.token_hex(4)
        self._codes: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self.requests: list[str] = []
        app = web.Application()
        app.add_routes([web.get("/openid/connect/authorize", self._authorize),
                        web.post("/api/openid.connect.token", self._token),
                        web.get("/openid/connect/keys", self._keys)])
        super().__init__(app, "slack-oidc-emulator")

    def describe(self) -> str:
        return f"the Slack OIDC emulator saw {self.requests}"

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        self.requests.append("authorize")
        if q.get("client_id") != self.client_id or "openid" not in q.get("scope", "").split() \
                or q.get("response_type") != "code" or not q.get("redirect_uri"):
            return web.Response(status=400, text="invalid authorize request")
        back = {"state": q.get("state", "")}
        if self.user is None:
            back["error"] = "access_denied"
        else:
            code = secrets.token_urlsafe(16)
            with self._lock:
                self._codes[code] = {"user": self.user, "nonce": q.get("nonce", ""),
                                     "redirect_uri": q["redirect_uri"]}
            back["code"] = code
        raise web.HTTPFound(f"{q['redirect_uri']}?{urlencode(back)}")

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.requests.append("token")
        with self._lock:
            grant = self._codes.pop(str(form.get("code", "")), None)
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return web.json_response({"ok": False, "error": "invalid_client"})
        if grant is None or form.get("redirect_uri") != grant["redirect_uri"]:
            return web.json_response({"ok": False, "error": "invalid_code"})
        return web.json_response({"ok": True, "access_token": "xoxp-" + secrets.token_hex(8),
                                  "token_type": "Bearer", "id_token": self._id_token(grant)})

    async def _keys(self, request: web.Request) -> web.Response:
        self.requests.append("keys")
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        return web.json_response({"keys": [{**public, "kid": self._kid, "alg": "RS256",
                                            "use": "sig"}]})

    def _id_token(self, grant: dict[str, str]) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": grant["user"], "aud": self.client_id, "exp": now + 300,
                  "iat": now, "auth_time": now, "nonce": grant["nonce"],
                  "https://slack.com/user_id": grant["user"],
                  "https://slack.com/team_id": self.team, "name": "Test Person",
                  **self.claims}
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self._kid})
