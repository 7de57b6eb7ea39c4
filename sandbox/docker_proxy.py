"""The filtering proxy between a Docker action and the engine: the action never holds the socket.

opsbot listens on a loopback port (a sandboxed action reaches it through its egress forwarder,
like any declared endpoint) and keeps one grant per running action, registered by the
credential broker (kind ``docker``, :mod:`sandbox.credentials.docker`) and removed when the
action ends or its TTL passes. A request is forwarded to the engine's unix socket only if

* it carries a live grant's token (``X-Opsbot-Token``; only its SHA-256 is kept here);
* its method and path match one of the grant's rules (``GET /containers/{id}/logs``), with an
  optional ``/v1.NN`` prefix, ``{id}`` being one of the grant's full container ids;
* every query key is one the rule lists, and it has no body.

Everything else is refused with 403 and a JSON message naming the reason, and logged
(``docker_proxy.refused``). Usage::

    proxy = DockerProxy("/var/run/docker.sock")
    await proxy.start()                     # proxy.port
    grant_id = proxy.grant(token, ["GET /containers/{id}/json"], [container_id], ttl_s=60)
    proxy.revoke(grant_id)
    await proxy.close()
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web

log = structlog.get_logger("opsbot.docker_proxy")
TOKEN_HEADER = "X-Opsbot-Token"
_VERSION = re.compile(r"^/v1\.\d{1,3}(?=/)")
_ID = "(?P<id>[0-9a-f]{64})"
MAX_RESPONSE = 8 * 1024 * 1024


@dataclass(frozen=True)
class Rule:
    """``METHOD /path/{id}/...?key,key``: one request an action may make."""

    method: str
    path: re.Pattern[str]
    query: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Rule:
        method, _, rest = text.strip().partition(" ")
        template, _, keys = rest.partition("?")
        if method not in ("GET", "POST") or not template.startswith("/"):
            raise ValueError(f"not a Docker API rule: {text!r}")
        pattern = re.escape(template).replace(re.escape("{id}"), _ID)
        return cls(method, re.compile(f"^{pattern}$"),
                   frozenset(k for k in keys.split(",") if k))


@dataclass
class Grant:
    id: str
    rules: tuple[Rule, ...]
    containers: frozenset[str]
    expires: float


class DockerProxy:
    def __init__(self, socket_path: str, host: str = "127.0.0.1") -> None:
        self.socket_path = socket_path
        self.host = host
        self.port = 0
        self._grants: dict[str, Grant] = {}  # sha256(token) -> grant
        self._runner: web.AppRunner | None = None
        self._engine: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        connector = aiohttp.UnixConnector(path=self.socket_path)
        self._engine = aiohttp.ClientSession(connector=connector,
                                             timeout=aiohttp.ClientTimeout(total=180))

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def grant(self, token: str, rules: list[str], containers: list[str], ttl_s: float) -> str:
        """Register what the holder of ``token`` may do; returns the grant's id (not secret)."""
        grant = Grant(f"dg-{secrets.token_hex(8)}", tuple(Rule.parse(r) for r in rules),
                      frozenset(containers), time.monotonic() + ttl_s)
        now = time.monotonic()
        self._grants = {d: g for d, g in self._grants.items() if g.expires > now}
        self._grants[_digest(token)] = grant
        return grant.id

    def revoke(self, grant_id: str) -> None:
        for digest, grant in list(self._grants.items()):
            if grant.id == grant_id:
                del self._grants[digest]

    def live(self) -> int:
        return sum(1 for g in self._grants.values() if g.expires > time.monotonic())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        grant = self._grants.get(_digest(request.headers.get(TOKEN_HEADER, "")))
        refusal = _refusal(grant, request)
        if refusal:
            log.warning("docker_proxy.refused", method=request.method, path=request.path,
                        grant=grant.id if grant else None, reason=refusal)
            return web.json_response({"message": f"opsbot's Docker proxy refused this: "
                                                 f"{refusal}"}, status=403)
        return await self._forward(request)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._engine is not None
        async with self._engine.request(request.method, f"http://docker{request.path}",
                                        params=request.query) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={
                "Content-Type": upstream.headers.get("Content-Type", "application/json")})
            await response.prepare(request)
            sent = 0
            async for chunk in upstream.content.iter_chunked(65536):
                sent += len(chunk)
                if sent > MAX_RESPONSE:
                    break
                await response.write(chunk)
            await response.write_eof()
            return response


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _refusal(grant: Grant | None, request: web.Request) -> str:
    """Why this request may not pass (empty when it may)."""
    if grant is None:
        return "no valid token (the action's grant is unknown, revoked or never existed)."
    if grant.expires <= time.monotonic():
        return "the action's grant has expired."
    if request.can_read_body or request.content_length:
        return "requests with a body are never forwarded."
    path = _VERSION.sub("", request.path)
    for rule in grant.rules:
        matched = rule.path.match(path) if rule.method == request.method else None
        if matched is None:
            continue
        if matched.groupdict().get("id", "") not in grant.containers | {""}:
            return "that container is not this action's target."
        extra = set(request.query) - rule.query
        return f"query parameters {sorted(extra)} are not allowed here." if extra else ""
    return f"{request.method} {path} is not a request this action declared."
