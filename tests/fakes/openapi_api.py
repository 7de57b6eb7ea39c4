"""An emulator for any HTTP API opsbot knows from an OpenAPI document, built from that document.

The server loads the same document the connector ships (``tools/openapi_docs/<name>.json``),
routes each request to its ``operationId`` by the document's paths, and checks it with
``openapi-core`` before a handler sees it: a request the document does not allow (wrong type,
missing field, unknown path) is answered 400/404 and recorded in ``refused``. Handlers return
``(status, payload)``; each reply is checked against the document's response schema too, and a
reply that does not match is recorded in ``faults`` (the fixtures assert there are none), so
the emulator cannot drift from the published API.

Usage::

    with OpenApiEmulator("lambda.json", {"listInstances": lambda call: (200, {"data": []})},
                         token="secret_x") as api:
        requests.get(api.url + "/api/v1/instances", headers={"Authorization": "Bearer secret_x"})
        api.calls("listInstances")
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import web
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from tests.fakes.server import Emulator
from tools.openapi import document, server_url

METHODS = ("get", "put", "post", "delete", "patch", "head")


@dataclass
class ApiCall:
    """One request as the emulator saw it (and what a handler gets)."""

    operation: str
    method: str
    path: str
    path_params: dict[str, str]
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    raw: str = ""

    def param(self, name: str) -> str | None:
        found = self.path_params.get(name) or self.query.get(name)
        return found[0] if isinstance(found, list) else found


Handler = Callable[[ApiCall], tuple[Any, ...]]  # (status, payload) or (status, payload, headers)


@dataclass
class _Request:
    """The request as openapi-core reads it (its ``Request`` protocol)."""

    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters


@dataclass
class _Response:
    data: bytes
    status_code: int
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class OpenApiEmulator(Emulator):
    def __init__(self, name: str, handlers: dict[str, Handler], token: str, auth: str = "bearer"):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._serve)
        super().__init__(app, f"{name}-emulator")
        self.name, self.handlers, self.token, self.auth = name, handlers, token, auth
        self.requests: list[ApiCall] = []
        self.refused: list[tuple[ApiCall | None, str]] = []
        self.faults: list[str] = []
        self._source = document(name)
        self._base_path = urlsplit(server_url(self._source) or "").path
        self._routes = _routes(self._source, self._base_path.rstrip("/"))
        self._openapi: OpenAPI | None = None

    def start(self) -> OpenApiEmulator:
        super().start()
        spec = copy.deepcopy(self._source)
        spec["servers"] = [{"url": self.url}]
        self._openapi = OpenAPI.from_dict(spec)
        return self

    @property
    def url(self) -> str:
        """The base URL a connector is configured with (the document's path under our origin)."""
        return self.origin + self._base_path.rstrip("/")

    def calls(self, operation: str) -> list[ApiCall]:
        return [c for c in self.requests if c.operation == operation]

    def all_text(self) -> str:
        return "\n".join(f"{c.method} {c.path} {c.query} {c.headers} {c.raw}"
                         for c in self.requests)

    def describe(self) -> str:
        seen = [f"{c.method} {c.path}" for c in self.requests]
        return f"the {self.name} emulator saw {seen}; refused {[r for _, r in self.refused]}"

    async def _serve(self, request: web.Request) -> web.Response:
        raw = await request.read()
        found = self._route(request.method.lower(), request.rel_url.raw_path)
        if found is None:
            self.refused.append((None, f"no operation for {request.method} {request.path}"))
            return _json(404, {"message": "not found"})
        call = _call(found, request, raw)
        self.requests.append(call)
        if not self._authorized(request.headers.get("Authorization", "")):
            return _json(401, {"message": "authentication required"})
        problem = self._invalid(request, raw)
        if problem:
            self.refused.append((call, problem))
            return _json(400, {"message": problem})
        status, payload, *headers = self.handlers[call.operation](call)
        self._check_reply(request, raw, status, payload)
        return _json(status, payload, *headers)

    def _route(self, method: str, raw_path: str) -> tuple[str, dict[str, str]] | None:
        for verb, pattern, operation in self._routes:
            match = pattern.fullmatch(raw_path)
            if verb == method and match and operation in self.handlers:
                return operation, {k: unquote(v) for k, v in match.groupdict().items()}
        return None

    def _authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return value == self.token
        if scheme.lower() == "basic" and self.auth == "basic":
            return base64.b64decode(value).decode() in (f"{self.token}:", self.token)
        return False

    def _invalid(self, request: web.Request, raw: bytes) -> str:
        result = self._openapi.unmarshal_request(_oa_request(self.origin, request, raw))
        if not result.errors:
            return ""
        return "; ".join(_error_text(e) for e in result.errors)

    def _check_reply(self, request: web.Request, raw: bytes, status: int, payload: Any) -> None:
        text = isinstance(payload, str)
        data = payload.encode() if text else json.dumps(payload).encode()
        reply = _Response(data, status, "text/plain" if text else "application/json")
        result = self._openapi.unmarshal_response(_oa_request(self.origin, request, raw), reply)
        if result.errors:
            self.faults.append(f"{request.method} {request.path} -> {status}: "
                               + "; ".join(_error_text(e) for e in result.errors))


def _routes(spec: dict[str, Any], prefix: str) -> list[tuple[str, re.Pattern[str], str]]:
    routes = []
    for path, item in spec["paths"].items():
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(prefix + path))
        for method in METHODS:
            if method in item:
                routes.append((method, re.compile(regex), item[method]["operationId"]))
    return routes


def _call(found: tuple[str, dict[str, str]], request: web.Request, raw: bytes) -> ApiCall:
    operation, path_params = found
    query: dict[str, list[str]] = {}
    for key, value in request.query.items():
        query.setdefault(key, []).append(value)
    text = raw.decode(errors="replace")
    try:
        body = json.loads(text) if text else None
    except json.JSONDecodeError:
        body = None
    return ApiCall(operation, request.method, request.rel_url.raw_path, path_params, query,
                   dict(request.headers), body, text)


def _oa_request(origin: str, request: web.Request, raw: bytes) -> _Request:
    parameters = RequestParameters(query=ImmutableMultiDict(list(request.query.items())),
                                   header=Headers(list(request.headers.items())))
    return _Request(origin, request.rel_url.raw_path, request.method.lower(), raw or None,
                    request.content_type.lower() if raw else "application/json", parameters)


def _error_text(error: Exception) -> str:
    causes = getattr(error, "schema_errors", None) or [getattr(error, "__cause__", None)]
    details = [getattr(c, "message", str(c)) for c in causes if c is not None]
    return f"{error}" + (f" ({'; '.join(details)})" if details else "")


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    if isinstance(payload, str):  # a text/plain operation (Qdrant's /healthz)
        return web.Response(text=payload, status=status, headers=headers)
    return web.json_response(payload, status=status, headers=headers)
