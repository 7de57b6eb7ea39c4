"""Estuary Flow: task status, and disabling or enabling a capture or materialization.

``status`` is the OpenAPI declaration in ``tools/openapi_apis.py`` (the control plane's REST
API). Estuary has no "disable" call: a task is disabled by publishing its spec with
``shards.disable: true``, as flowctl does, through the control plane's PostgREST endpoint
(``tools/openapi_docs/estuary_publish.json``, written from flowctl's use of it). ``disable`` and
``enable`` (tier 3, previewed) are that sequence, each request built from and checked against
that document before it is sent:

1. read the live spec (``live_specs``): its type, spec and last publication id;
2. create a draft, stage the spec with ``shards.disable`` set (or removed) and
   ``expect_pub_id`` = the live one, so a concurrent change makes the publication fail
   instead of being overwritten;
3. publish the draft and poll the publication until it leaves ``queued``; on failure report
   the draft's errors and delete the draft.

A task already in the wanted state publishes nothing. Settings: ``OPSBOT_ESTUARY_REST_URL`` (the
PostgREST endpoint, ``https://<project>.supabase.co/rest/v1``) and ``OPSBOT_ESTUARY_REST_KEY``
(its public API key, sent as ``apikey``), besides the status API's URL and the access token.
"""

from __future__ import annotations

import copy
import time
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tools.base import Action, ActionContext, Endpoint, SecretRef, Target, Tier, ToolResult, Toolset
from tools.catalog import CallError
from tools.openapi import OpenApiConfig, document
from tools.openapi_apis import ESTUARY_TOOLSET as STATUS
from tools.openapi_schema import Operation, load_operations

DOC = "estuary_publish.json"
OPS = load_operations(document(DOC), ["getLiveSpecs", "createDraft", "deleteDraft",
                                      "upsertDraftSpec", "createPublication", "getPublications",
                                      "getDraftErrors"])
TASKS = ("capture", "materialization")
POLL_S = 1.0
PUBLISH_WAIT_S = 90.0


class EstuaryConfig(OpenApiConfig):
    """The status API (``base_url``), the PostgREST endpoint and its public key, the token."""

    rest_url: str | None = None
    rest_key: str | None = None

    @field_validator("rest_url")
    @classmethod
    def _rest(cls, url: str | None) -> str | None:
        parts = urlsplit(url or "")
        if url is not None and (parts.scheme not in ("http", "https") or not parts.hostname
                                or parts.username or parts.query):
            raise ValueError("must be an http(s) URL such as https://<project>.supabase.co/rest/v1")
        return url.rstrip("/") if url else None

    def rest(self) -> tuple[str, str, int]:
        """(scheme, host, port) of the PostgREST endpoint, or CallError when it is not set."""
        if not self.rest_url:
            raise CallError("Enabling or disabling Estuary tasks needs OPSBOT_ESTUARY_REST_URL "
                            "(the control plane's PostgREST endpoint) and OPSBOT_ESTUARY_REST_KEY.")
        parts = urlsplit(self.rest_url)
        return parts.scheme, parts.hostname or "", parts.port or (
            443 if parts.scheme == "https" else 80)


class TaskParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$", max_length=512,
                      description="The capture's or materialization's catalog name, "
                                  "e.g. acme/pg-cdc.")

    @field_validator("name")
    @classmethod
    def _segments(cls, name: str) -> str:
        if {".", ".."} & set(name.split("/")):
            raise ValueError("catalog name segments `.` and `..` are not allowed")
        return name


class EstuaryAnswer(Exception):
    """The control plane refused or failed; ``str(e)`` is the sentence."""


def _send(op: Operation, values: dict[str, Any], ctx: ActionContext) -> Any:
    """One request of the publish document, checked against it first."""
    import requests

    op.validate(values)
    config = EstuaryConfig.model_validate(ctx.config)
    scheme, host, port = config.rest()
    host, port = ctx.address(host, port)
    url = f"{scheme}://{host}:{port}{urlsplit(config.rest_url or '').path}{op.fill(values)}"
    headers = {"Authorization": f"Bearer {ctx.secrets.get('api_token', '')}",
               "apikey": config.rest_key or "",
               "Prefer": "return=representation,resolution=merge-duplicates"}
    reply = requests.request(op.method.upper(), url, params=op.query(values),
                             json=values.get("body"), headers=headers, timeout=20,
                             allow_redirects=False)
    body = reply.json() if reply.content else None
    if reply.status_code >= 300:
        message = body.get("message") if isinstance(body, dict) else None
        raise EstuaryAnswer(f"Estuary answered {reply.status_code} to {op.summary.lower()}: "
                            f"{message or 'no message'}")
    return body


def _live(name: str, ctx: ActionContext) -> dict[str, Any]:
    found = _send(OPS["getLiveSpecs"], {"catalog_name": f"eq.{name}",
                                        "select": "catalog_name,spec_type,spec,last_pub_id"}, ctx)
    if not found:
        raise EstuaryAnswer(f"Estuary has no live spec named {name}.")
    live = found[0]
    if live.get("spec_type") not in TASKS:
        raise EstuaryAnswer(f"{name} is a {live.get('spec_type')}; only captures and "
                            "materializations can be disabled or enabled.")
    return live


def _disabled(live: dict[str, Any]) -> bool:
    return bool(((live.get("spec") or {}).get("shards") or {}).get("disable"))


def _publish(name: str, live: dict[str, Any], disable: bool, ctx: ActionContext) -> str:
    """Draft, stage, publish, wait: the publication's id, or EstuaryAnswer with its errors."""
    verb = "disable" if disable else "enable"
    spec = copy.deepcopy(live.get("spec") or {})
    shards = spec.setdefault("shards", {})
    if disable:
        shards["disable"] = True
    else:
        shards.pop("disable", None)
    detail = f"opsbot: {verb} {name}"
    (draft,) = _send(OPS["createDraft"], {"select": "id", "body": {"detail": detail}}, ctx)
    try:
        _send(OPS["upsertDraftSpec"], {"on_conflict": "draft_id,catalog_name", "body": {
            "draft_id": draft["id"], "catalog_name": name, "spec_type": live["spec_type"],
            "spec": spec, "expect_pub_id": live["last_pub_id"]}}, ctx)
        (publication,) = _send(OPS["createPublication"], {"select": "id,logs_token", "body": {
            "draft_id": draft["id"], "detail": detail, "dry_run": False}}, ctx)
        outcome = _wait(publication["id"], ctx)
        if outcome != "success":
            raise EstuaryAnswer(_failure(outcome, draft["id"], ctx))
    except BaseException:
        _send(OPS["deleteDraft"], {"id": f"eq.{draft['id']}"}, ctx)  # flowctl does the same
        raise
    return str(publication["id"])


def _wait(publication: str, ctx: ActionContext) -> str:
    deadline = time.monotonic() + PUBLISH_WAIT_S
    while True:
        (row,) = _send(OPS["getPublications"], {"id": f"eq.{publication}",
                                                "select": "id,job_status"}, ctx)
        status = row["job_status"]["type"]
        if status != "queued":
            return status
        if time.monotonic() > deadline:
            return f"still queued after {PUBLISH_WAIT_S:g} s"
        ctx.progress(f"publication {publication} queued")
        time.sleep(POLL_S)


def _failure(outcome: str, draft: str, ctx: ActionContext) -> str:
    errors = _send(OPS["getDraftErrors"], {"draft_id": f"eq.{draft}",
                                           "select": "scope,detail"}, ctx) or []
    reasons = "; ".join(f"{e['scope']}: {e['detail']}" for e in errors[:5])
    return f"Estuary did not publish ({outcome})" + (f": {reasons}" if reasons else ".")


def _change(disable: bool):
    state = "disabled" if disable else "enabled"

    def run(p: TaskParams, ctx: ActionContext) -> ToolResult:
        inv = f"estuary {'disable' if disable else 'enable'} {p.name}"
        live = _live(p.name, ctx)
        if _disabled(live) == disable:
            return ToolResult.ok(inv, f"{p.name} is already {state}; nothing was published.")
        publication = _publish(p.name, live, disable, ctx)
        return ToolResult.ok(inv, f"{p.name} ({live['spec_type']}) is now {state} "
                                  f"(publication {publication}).", {"publication": publication})

    return run


def _preview(p: TaskParams, ctx: ActionContext) -> ToolResult:
    live = _live(p.name, ctx)
    state = "disabled" if _disabled(live) else "enabled"
    return ToolResult.ok(f"GET live_specs {p.name}", f"{p.name} ({live['spec_type']}) is "
                         f"{state}; last publication {live['last_pub_id']}.",
                         {"spec_type": live["spec_type"], "disabled": _disabled(live)})


def _guarded(run):
    def guarded(p: BaseModel, ctx: ActionContext) -> ToolResult:
        import requests

        try:
            return run(p, ctx)
        except (EstuaryAnswer, CallError, ValueError) as e:
            return ToolResult.fail("estuary", str(e))
        except requests.RequestException as e:
            return ToolResult.fail("estuary", f"Cannot reach Estuary: {type(e).__name__}.")

    return guarded


def _task_action(disable: bool) -> Action[Any]:
    verb = "disable" if disable else "enable"
    return Action(name=verb, description=f"{verb.title()} a capture or materialization (publishes "
                  f"its spec with shards {'disabled' if disable else 'enabled'}).",
                  tier=Tier.SANDBOX_EXECUTE, params=TaskParams,
                  summary=lambda p: f"{verb.title()} Estuary task {p.name}",
                  run=_guarded(_change(disable)), timeout=PUBLISH_WAIT_S + 30,
                  preview=_guarded(_preview))


ACTIONS = [*STATUS.actions, _task_action(True), _task_action(False)]
CHANGES = {"disable", "enable"}


def _target(action: Action[Any], p: BaseModel, config: EstuaryConfig) -> Target:
    if action.name not in CHANGES:
        return STATUS.target(action, p, config)
    config.rest()  # refuses the call here when the endpoint is not configured
    return Target(kind="estuary_task", name=p.name,  # type: ignore[attr-defined]
                  attrs={"host": urlsplit(config.rest_url or "").hostname or "",
                         "action": action.name, "names": p.name})  # type: ignore[attr-defined]


def _egress(action: Action[Any], p: BaseModel, config: EstuaryConfig) -> list[Endpoint]:
    if action.name not in CHANGES:
        return STATUS.egress(action, p, config)
    _, host, port = config.rest()
    return [Endpoint(host=host, port=port)]


def _secrets(action: Action[Any], p: BaseModel, config: EstuaryConfig) -> list[SecretRef]:
    return STATUS.secrets(action, p, config)


TOOLSET: Toolset[EstuaryConfig] = Toolset(
    name="estuary",
    description=STATUS.description.rstrip(".") + "; with approval, disable or enable a capture "
    "or materialization.",
    config=EstuaryConfig,
    actions=ACTIONS,
    target=_target,
    egress=_egress,
    secrets=_secrets,
    target_kinds=("estuary_task",),
    env={**STATUS.env, "rest_url": "OPSBOT_ESTUARY_REST_URL",
         "rest_key": "OPSBOT_ESTUARY_REST_KEY"},
    preload=("requests",),
)
