"""Connectors that are data: an OpenAPI 3 document plus an allow-list of its operations.

A vendor that publishes an OpenAPI document needs no hand-written module: an :class:`ApiSpec`
names the document (a file in ``tools/openapi_docs/``), the operations opsbot may call (by
``operationId``, each with an action name, an optional tier, preview and target facts), how the
token is sent, and which response fields are secrets. :func:`toolset` turns it into an ordinary
:class:`~tools.base.Toolset`, so policy, approvals, the sandbox and the LLM see typed actions like
any other connector's.

* Tiers default by method: GET/HEAD 0, DELETE 4, anything else 3; policy raises as usual.
* Params and bodies are validated against the document's own schemas when a call is resolved,
  so a call that violates the schema is refused before approval and before any request.
* Egress is exactly the base URL's host:port; path values are percent-encoded and redirects are
  never followed, so a request cannot leave that host.

Usage::

    NEON = ApiSpec(name="neon", document="neon.json", target_kind="neon_project",
                   allow={"listProjects": Allow(name="projects"), ...})
    TOOLSET = toolset(NEON)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from tools import openapi_http as http
from tools.base import Action, Endpoint, SecretRef, Target, Tier, Toolset
from tools.openapi_schema import Operation, load_operations

DOCS = Path(__file__).parent / "openapi_docs"
PARAM_MAX_CHARS = 1024  # a path or query value an approver can read whole on a card
PARAM_MAX_ITEMS = 100  # (the JSON body is bounded as a whole by the catalog's call limit)
TIER_BY_METHOD = {"get": Tier.OBSERVE, "head": Tier.OBSERVE, "delete": Tier.PRODUCTION}


class Preview(BaseModel):
    """A read-only operation that shows the approver what a change would touch.

    ``params`` maps the preview operation's parameters to JSON pointers into the call's params
    (``{"id": "/body/instance_ids"}``); a pointer that lands on a list runs the preview once per
    item.
    """

    model_config = ConfigDict(frozen=True)

    operation: str
    params: dict[str, str] = {}


class Allow(BaseModel):
    """One allowed operation: the action's name, and optionally its tier, preview and target facts
    (``target``: attribute name → JSON pointer into the params, for policy rules to match)."""

    model_config = ConfigDict(frozen=True)

    name: str
    tier: Tier | None = None
    preview: Preview | None = None
    target: dict[str, str] = {}


@dataclass(frozen=True)
class ApiSpec:
    """The declaration of one OpenAPI connector (see the module docstring)."""

    name: str
    description: str
    document: str
    allow: Mapping[str, Allow]
    target_kind: str
    auth: Literal["bearer", "basic"] = "bearer"
    secret_fields: tuple[str, ...] = ()
    timeout: float = 30.0
    env: Mapping[str, str] = field(default_factory=dict)


class OpenApiConfig(BaseModel):
    """Where the API is and where its token comes from (``kv/data/<path>#<key>`` or ``static:``)."""

    model_config = ConfigDict(frozen=True)

    base_url: str
    token_secret: str | None = None

    @field_validator("base_url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://api.example.com/v1")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must be a plain base URL: no credentials, query or fragment")
        return url.rstrip("/")

    @field_validator("token_secret")
    @classmethod
    def _ref(cls, ref: str | None) -> str | None:
        return SecretRef.check(ref)

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)


@cache
def document(name: str) -> dict[str, Any]:
    return json.loads((DOCS / name).read_text())


def default_url(spec: ApiSpec) -> str | None:
    return server_url(document(spec.document))


def server_url(doc: dict[str, Any]) -> str | None:
    """The first server URL the document names, variables at their defaults (None: none)."""
    servers = doc.get("servers") or []
    if not servers:
        return None
    url = servers[0]["url"]
    for name, variable in servers[0].get("variables", {}).items():
        url = url.replace("{" + name + "}", str(variable.get("default", "")))
    return url.rstrip("/")


def toolset(spec: ApiSpec) -> Toolset[OpenApiConfig]:
    operations = load_operations(document(spec.document), list(spec.allow))
    actions = [_action(spec, operations[op_id], allow, operations)
               for op_id, allow in spec.allow.items()]
    return Toolset(
        name=spec.name,
        description=spec.description,
        config=_config_model(spec),
        actions=actions,
        target=lambda action, params, config: _target(spec, action, params, config),
        egress=lambda action, params, config: [Endpoint(host=config.host, port=config.port)],
        secrets=_secrets,
        target_kinds=(spec.target_kind,),
        env=spec.env,
        preload=("requests",),
    )


def _config_model(spec: ApiSpec) -> type[OpenApiConfig]:
    """OpenApiConfig whose base URL defaults to the document's first server, if it names one."""
    url = default_url(spec)
    if url is None:
        return OpenApiConfig
    name = f"{spec.name.title()}Config"
    return create_model(name, __base__=OpenApiConfig, base_url=(str, url))  # type: ignore


def _action(spec: ApiSpec, op: Operation, allow: Allow, operations: dict[str, Operation]
            ) -> Action[Any]:
    preview = operations.get(allow.preview.operation) if allow.preview else None
    if allow.preview and (preview is None or preview.method != "get"):
        raise ValueError(f"{spec.name}: preview {allow.preview.operation} must be an allowed GET")
    return Action(
        name=allow.name,
        description=op.description,
        tier=allow.tier if allow.tier is not None else TIER_BY_METHOD.get(op.method, Tier(3)),
        params=_params_model(spec, allow, op),
        summary=lambda p: f"{op.summary}: {op.method.upper()} {op.fill(_values(p))}",
        run=http.runner(spec.name, op, spec.auth, spec.secret_fields),
        timeout=spec.timeout,
        preview=http.previewer(spec.name, preview, allow.preview.params, spec.auth,
                               spec.secret_fields) if preview and allow.preview else None,
    )


def _params_model(spec: ApiSpec, allow: Allow, op: Operation) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for param in op.parameters:
        default = ... if param.required else None
        kind = _bounded(param.python_type)
        kind = kind if param.required else kind | None
        fields[param.field] = (kind, Field(default, alias=param.alias,
                                           description=param.description))
    if op.body is not None:
        default = ... if op.body_required else None
        fields["body"] = (dict[str, Any] | None, Field(default, description=op.body_description))

    def check(self: BaseModel) -> BaseModel:
        op.validate(_values(self))  # raises ValueError naming the field and the rule it breaks
        return self

    model_name = "".join(part.title() for part in re.split(r"[^A-Za-z0-9]", allow.name)) + "Params"
    return create_model(  # type: ignore[call-overload]
        model_name,
        __config__=ConfigDict(extra="forbid", populate_by_name=True),
        __validators__={"_document": model_validator(mode="after")(check)},
        **fields,
    )


def _bounded(kind: Any) -> Any:
    """Strings and lists with a length limit, whatever the vendor's document says (it is
    checked too, by ``Operation.validate``)."""
    if kind is str:
        return Annotated[str, Field(max_length=PARAM_MAX_CHARS)]
    if get_origin(kind) is list:
        (item,) = get_args(kind)
        return Annotated[list[_bounded(item)], Field(max_length=PARAM_MAX_ITEMS)]
    return kind


def _values(params: BaseModel) -> dict[str, Any]:
    """The call's params keyed as the document names them, without unset optional ones."""
    return {k: v for k, v in params.model_dump(by_alias=True).items() if v is not None}


def _target(spec: ApiSpec, action: Action[Any], params: BaseModel, config: OpenApiConfig
            ) -> Target:
    allow = next(a for a in spec.allow.values() if a.name == action.name)
    values = _values(params)
    attrs = {"host": config.host, "action": action.name}
    attrs |= {k: str(v) for k, v in values.items() if k != "body" and isinstance(v, str | int)}
    for attr, pointer in allow.target.items():
        found = http.pointer(values, pointer)
        if found is not None:
            attrs[attr] = ",".join(map(str, found)) if isinstance(found, list) else str(found)
    named = [attrs.get(k) for k in ("project_id", "id", "instance_ids", "names", "collection")]
    name = next((n for n in named if n), config.host)
    return Target(kind=spec.target_kind, name=name, attrs=attrs)


def _secrets(action: Action[Any], params: BaseModel, config: OpenApiConfig) -> list[SecretRef]:
    return [SecretRef.parse("api_token", config.token_secret)] if config.token_secret else []
