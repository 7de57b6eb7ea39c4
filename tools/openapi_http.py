"""What an OpenAPI action does inside the sandbox: one HTTP request to the declared host.

The URL is always the configured base URL plus the operation's path with its values
percent-encoded; redirects are refused (a 3xx is an error value, never followed), so nothing
the API or a parameter says can send the request, or the token, to another host. Response
fields the declaration names as secrets (``password``, ``jupyter_token`` ...) are replaced
before anything leaves the action.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from tools.base import ActionContext, ToolResult

if TYPE_CHECKING:
    from tools.openapi_schema import Operation

MAX_OUTPUT_CHARS = 12_000
MASK = "[redacted]"
Run = Callable[[BaseModel, ActionContext], ToolResult]


def runner(api: str, op: Operation, auth: str, secret_fields: tuple[str, ...]) -> Run:
    def run(params: BaseModel, ctx: ActionContext) -> ToolResult:
        values = _values(params)
        return _call(api, op, values, ctx, auth, secret_fields)

    return run


def previewer(api: str, op: Operation, mapping: dict[str, str], auth: str,
              secret_fields: tuple[str, ...]) -> Run:
    """Run the read-only ``op`` once per value the mapping points at; join what it shows."""

    def preview(params: BaseModel, ctx: ActionContext) -> ToolResult:
        calls = _expand(mapping, _values(params))
        results = [_call(api, op, values, ctx, auth, secret_fields) for values in calls]
        failed = next((r for r in results if r.error), None)
        if failed is not None:
            return failed
        text = "\n\n".join(r.output for r in results) or "nothing to preview"
        return ToolResult.ok(results[0].invocation if results else op.id,
                             f"This would affect:\n{text}", [r.data for r in results])

    return preview


def pointer(document: Any, path: str) -> Any:
    """A JSON pointer (``/body/instance_ids``) into ``document``, or None when absent."""
    node = document
    for part in path.strip("/").split("/") if path.strip("/") else []:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _values(params: BaseModel) -> dict[str, Any]:
    return {k: v for k, v in params.model_dump(by_alias=True).items() if v is not None}


def _expand(mapping: dict[str, str], values: dict[str, Any]) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = [{}]
    for name, path in mapping.items():
        found = pointer(values, path)
        options = found if isinstance(found, list) else [found]
        calls = [{**c, name: o} for c in calls for o in options if o is not None]
    return calls


def _call(api: str, op: Operation, values: dict[str, Any], ctx: ActionContext, auth: str,
          secret_fields: tuple[str, ...]) -> ToolResult:
    import requests

    from tools.openapi import OpenApiConfig

    config = OpenApiConfig.model_validate(ctx.config)
    path = op.fill(values)
    query = {k: str(v).lower() if isinstance(v, bool) else v for k, v in op.query(values).items()}
    inv = f"{op.method.upper()} {path}" + (f"?{_query_text(query)}" if query else "")
    try:
        reply = requests.request(
            op.method.upper(), _url(config, ctx) + path, params=query, json=values.get("body"),
            headers=_auth(ctx.secrets.get("api_token"), auth), timeout=20, allow_redirects=False)
    except requests.RequestException as e:
        return ToolResult.fail(inv, f"Cannot reach the {api} API at {config.base_url}: "
                                    f"{type(e).__name__}.")
    return _result(api, inv, reply, secret_fields, config.host)


def _url(config: Any, ctx: ActionContext) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(config.base_url)
    host, port = ctx.address(config.host, config.port)
    return f"{parts.scheme}://{host}:{port}{parts.path}"


def _auth(token: str | None, scheme: str) -> dict[str, str]:
    if not token:
        return {}
    if scheme == "basic":
        import base64

        return {"Authorization": "Basic " + base64.b64encode(f"{token}:".encode()).decode()}
    return {"Authorization": f"Bearer {token}"}


def _result(api: str, inv: str, reply: Any, secret_fields: tuple[str, ...], host: str
            ) -> ToolResult:
    if 300 <= reply.status_code < 400:
        return ToolResult.fail(inv, f"The {api} API answered {reply.status_code} (a redirect); "
                                    f"opsbot does not follow redirects away from {host}.")
    try:
        body = reply.json() if reply.content else None
    except ValueError:
        body = reply.text[:500]
    body = scrub(body, secret_fields)
    if reply.status_code >= 400:
        return ToolResult.fail(inv, f"The {api} API answered {reply.status_code}: "
                                    f"{_error_text(body)}")
    text = json.dumps(body, indent=1, ensure_ascii=False) if body is not None else "(no content)"
    if len(text) > MAX_OUTPUT_CHARS:
        text = text[:MAX_OUTPUT_CHARS] + f"\n… ({len(text) - MAX_OUTPUT_CHARS} more characters)"
    if body in (None, [], {}) or body == {"data": []}:
        return ToolResult.no_data(inv, f"The {api} API returned nothing ({reply.status_code}).")
    return ToolResult.ok(inv, text, body)


def scrub(value: Any, fields: tuple[str, ...]) -> Any:
    """``value`` with every key named in ``fields`` (at any depth) masked."""
    if isinstance(value, dict):
        return {k: MASK if k in fields and v not in (None, "") else scrub(v, fields)
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, fields) for v in value]
    return value


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error.get("code") or error)
        return str(body.get("message") or error or body)[:500]
    return str(body or "no message")[:500]


def _query_text(query: dict[str, Any]) -> str:
    return "&".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                    for k, v in query.items())
