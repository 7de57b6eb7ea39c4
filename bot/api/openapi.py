"""The task API's OpenAPI 3.1 document (``GET /api/v1/openapi.json``), its schemas generated
from the pydantic models that validate requests and shape responses (``bot/api/models.py``)."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from bot.api.models import Cancelled, Problem, Run, RunRequest
from graph.task import RUN_ID

PREFIX = "/api/v1"
PROBLEM = "application/problem+json"
ERRORS = {400: "the body is not JSON", 401: "missing, unknown, expired or revoked bearer token",
          403: "outside the token's scope, or refused by policy",
          404: "no such run (for this token's user)", 409: "the run can't be cancelled now",
          413: "the body is too large", 415: "the body is not application/json",
          422: "the request is not valid", 429: "too many requests: see Retry-After"}


@cache
def document() -> dict[str, Any]:
    schemas = _schemas()
    run_id = {"name": "run_id", "in": "path", "required": True,
              "schema": {"type": "string", "pattern": RUN_ID}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "opsbot task API", "version": "1",
                 "description": "Start runs as the token's Slack user, follow and cancel them. "
                                "Every run passes opsbot's policy and approvals and reports "
                                "in Slack."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            f"{PREFIX}/runs": {"post": _op(
                "startRun", "Start a run", body="RunRequest",
                ok=(202, _json("Run"), {"Location": {"schema": {"type": "string"}}}),
                errors=(400, 401, 403, 413, 415, 422, 429))},
            f"{PREFIX}/runs/{{run_id}}": {"get": _op(
                "getRun", "A run: state, steps, approvals, report", params=[run_id],
                ok=(200, _json("Run"), {}), errors=(401, 404, 429))},
            f"{PREFIX}/runs/{{run_id}}/events": {"get": _op(
                "runEvents", "Server-sent events: `checklist` on each change, then `report`",
                params=[run_id], ok=(200, {"text/event-stream": {"schema": {"type": "string"}}},
                                     {}), errors=(401, 404, 429))},
            f"{PREFIX}/runs/{{run_id}}/cancel": {"post": _op(
                "cancelRun", "Cancel a run (its requester, or one of its approvers)",
                params=[run_id], ok=(200, _json("Cancelled"), {}),
                errors=(401, 404, 409, 429))},
        },
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "a token from `opsbot tokens create`"}}},
    }


def _schemas() -> dict[str, Any]:
    models = [(RunRequest, "validation"), (Run, "serialization"), (Cancelled, "serialization"),
              (Problem, "serialization")]
    _, found = models_json_schema(models, ref_template="#/components/schemas/{model}")
    return found["$defs"]


def _op(operation_id: str, summary: str, *, ok: tuple[int, dict[str, Any], dict[str, Any]],
        errors: tuple[int, ...], body: str | None = None,
        params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    status, content, headers = ok
    responses: dict[str, Any] = {str(status): {"description": "OK", "content": content,
                                               **({"headers": headers} if headers else {})}}
    for code in errors:
        responses[str(code)] = {"description": ERRORS[code],
                                "content": {PROBLEM: {"schema": _ref("Problem")}}}
    responses["429"]["headers"] = {"Retry-After": {"required": True,
                                                   "schema": {"type": "integer", "minimum": 1}}}
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary,
                          "parameters": params or [], "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    return op


def _json(model: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def _ref(model: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model}"}
