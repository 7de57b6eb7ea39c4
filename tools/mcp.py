"""MCP servers as toolsets: every tool of a declared server becomes an opsbot action.

A server is declared by the operator (``OPSBOT_MCP``, a YAML file read by ``graph/mcp.py``) as
a :class:`ServerEntry`; its tools are *listed* from the server (inside the sandbox) and
:func:`build_toolset` turns that list into a :class:`~tools.base.Toolset` like any typed
connector, so the catalog, policy, approvals, the LLM agent and ``/ops help`` treat
``git git_status`` exactly like ``redis info``:

* params are validated against the tool's ``inputSchema`` (JSON Schema), with the lax
  coercion typed commands need (``max_count=5`` is the integer 5 when the schema says so);
* the tier comes from the tool's annotations (``readOnlyHint`` → 0, ``destructiveHint: false``
  → 3, otherwise 4, the spec's default being destructive), never below the server's
  ``floor``; the operator's ``tiers`` overrides win outright. Annotations are hints from an
  untrusted server: they can raise a tool above the floor, never below it;
* the target is ``mcp <server> <tool>`` (kind ``mcp``, attrs ``server``, ``tool``,
  ``transport``), which policy rules match to raise or deny;
* ``run`` executes inside the sandbox container (``tools/mcp_call.py``): a stdio server is
  started there, an HTTP server is reached through the egress forwarders.

Usage::

    entry = ServerEntry(name="time", transport="stdio", command="python3",
                        args=["-m", "mcp_server_time"])
    toolset = build_toolset(entry, [ToolSpec(name="get_current_time", ...)])
"""

from __future__ import annotations

import hashlib
import json
import keyword
import re
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from functools import partial
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)

from pydantic_core import PydanticCustomError

from tools.base import (
    Action,
    ActionContext,
    Endpoint,
    Mount,
    SecretRef,
    Target,
    Tier,
    ToolResult,
    Toolset,
)

LIST = "tools/list"  # the sandbox action that lists a server's tools (never a tool name)
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what the LLM's function names allow
SERVER_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
MAX_DESCRIPTION = 1024  # a server's tool description is untrusted text shown to the model
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The container's limit is the server's ``timeout`` plus this, so a server that does not
# answer is reported by the in-container client (a sentence naming the server) before the
# sandbox kills the container (which it still does if even that hangs).
GRACE_S = 20.0
# Listing starts the server, which may take seconds on a busy host (a Python server imports
# its SDK first): a short per-call ``timeout`` must not make a server look dead at boot.
LIST_MIN_S = 15.0


def list_timeout(entry: ServerEntry) -> float:
    return max(entry.timeout, LIST_MIN_S)


class ServerEntry(BaseModel):
    """One MCP server of the ``OPSBOT_MCP`` file; also the toolset's config (sent to the
    sandbox with every call, so it holds secret *references* only, never values)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(max_length=32, description="The toolset name: `/ops <name> <tool>`.")
    description: str = ""
    transport: Literal["stdio", "http"]
    command: str | None = None
    args: tuple[str, ...] = ()
    cwd: str = "/tmp"
    url: str | None = None
    env: dict[str, str] = Field(default_factory=dict,
                                description="Server env vars whose values are secret refs.")
    vars: dict[str, str] = Field(default_factory=dict, description="Plain env vars.")
    headers: dict[str, str] = Field(default_factory=dict,
                                    description="HTTP headers whose values are secret refs.")
    tools: tuple[str, ...] | None = Field(None, description="Allow-list (globs); None: all.")
    tiers: dict[str, Tier] = Field(default_factory=dict, description="Operator's tool tiers.")
    floor: Tier = Tier.OBSERVE
    timeout: float = Field(60.0, gt=0, le=900)
    egress: tuple[str, ...] = Field((), description="host:port a stdio server may reach.")
    mounts: tuple[Mount, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not SERVER_NAME.match(name) or "__" in name:
            raise ValueError("must be lowercase letters and digits, single - or _ between them")
        return name

    @field_validator("env", "headers")
    @classmethod
    def _refs(cls, value: dict[str, str]) -> dict[str, str]:
        for key, ref in value.items():
            SecretRef.check(ref)
            if not ENV_NAME.match(key) and not re.match(r"^[A-Za-z0-9-]+$", key):
                raise ValueError(f"`{key}` is not a variable or header name")
        return value

    @field_validator("egress")
    @classmethod
    def _endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"`{item}` is not host:port")
        return value

    @model_validator(mode="after")
    def _transport(self) -> ServerEntry:
        if self.transport == "stdio" and not self.command:
            raise ValueError("a stdio server needs `command`")
        if self.transport == "http":
            parts = urlsplit(self.url or "")
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("an http server needs `url` like https://host/mcp")
            if self.command or self.mounts:
                raise ValueError("an http server takes no `command` or `mounts`")
        return self

    def allows(self, tool: str) -> bool:
        return self.tools is None or any(fnmatchcase(tool, p) for p in self.tools)

    def endpoints(self) -> list[Endpoint]:
        found = [_endpoint(item) for item in self.egress]
        if self.transport == "http":
            parts = urlsplit(self.url or "")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            found.insert(0, Endpoint(host=parts.hostname or "", port=port))
        return list(dict.fromkeys(found))

    def secret_refs(self) -> list[SecretRef]:
        refs = [SecretRef.parse(f"env:{k}", v) for k, v in sorted(self.env.items())]
        return refs + [SecretRef.parse(f"header:{k}", v) for k, v in sorted(self.headers.items())]


def _endpoint(item: str) -> Endpoint:
    host, _, port = item.rpartition(":")
    return Endpoint(host=host.strip("[]"), port=int(port))


class ToolSpec(BaseModel):
    """A tool as the server listed it (untrusted)."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    read_only: bool | None = None  # annotations.readOnlyHint
    destructive: bool | None = None  # annotations.destructiveHint


def annotation_tier(spec: ToolSpec) -> Tier:
    """What the tool's own annotations claim (the spec's default is destructive)."""
    if spec.read_only:
        return Tier.OBSERVE
    if spec.destructive is False:
        return Tier.SANDBOX_EXECUTE
    return Tier.PRODUCTION


def tool_tier(entry: ServerEntry, spec: ToolSpec) -> Tier:
    """The operator's override, else the annotations' claim, never below the floor."""
    if spec.name in entry.tiers:
        return entry.tiers[spec.name]
    return max(entry.floor, annotation_tier(spec))


class SchemaParams(BaseModel):
    """Params of an MCP tool: validated against the tool's JSON Schema, dumped as given.

    Subclasses made by :func:`params_model` declare the schema's top-level properties (so
    help and bare values know them) and carry the schema itself; ``model_json_schema`` is
    the server's schema, and a dump contains only what was given (no filled-in Nones)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __schema__: dict[str, Any] = {"type": "object"}

    @model_validator(mode="before")
    @classmethod
    def _against_schema(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ValueError("params must be an object")
        data = coerce(dict(data), cls.__schema__)
        problem = schema_problem(data, cls.__schema__)
        if problem:
            raise PydanticCustomError("json_schema", "{problem}", {"problem": problem})
        return data

    @model_serializer(mode="wrap")
    def _as_given(self, handler: Any) -> dict[str, Any]:
        dumped = handler(self)
        return {k: v for k, v in dumped.items() if k in self.model_fields_set}

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return dict(cls.__schema__)


def params_model(spec: ToolSpec) -> type[SchemaParams]:
    """A :class:`SchemaParams` subclass for one tool's ``inputSchema``."""
    schema = spec.input_schema if isinstance(spec.input_schema, dict) else {"type": "object"}
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = set(schema.get("required") or [])
    fields: dict[str, Any] = {}
    for name, prop in props.items():
        if not _declarable(name):
            continue
        about = prop.get("description") if isinstance(prop, dict) else None
        default = ... if name in required else None
        fields[name] = (Any, Field(default, description=str(about or "")[:300] or None))
    model = create_model(f"MCP_{re.sub(r'[^A-Za-z0-9_]', '_', spec.name)}", __base__=SchemaParams,
                         **fields)
    model.__schema__ = schema
    return model


def _declarable(name: str) -> bool:
    return (name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_")
            and not hasattr(BaseModel, name))


def coerce(params: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Typed commands give strings; turn ``"5"`` into 5 where the schema wants a number."""
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    out = dict(params)
    for key, value in params.items():
        prop = props.get(key)
        if isinstance(value, str) and isinstance(prop, dict):
            out[key] = _coerced(value, _types(prop))
    return out


def _types(prop: Mapping[str, Any]) -> set[str]:
    kind = prop.get("type")
    found = set(kind) if isinstance(kind, list) else {kind} if isinstance(kind, str) else set()
    for option in prop.get("anyOf") or prop.get("oneOf") or []:
        if isinstance(option, dict) and isinstance(option.get("type"), str):
            found.add(option["type"])
    return found


def _coerced(value: str, kinds: set[str]) -> Any:
    if "string" in kinds or not kinds:
        return value
    if "integer" in kinds and re.fullmatch(r"-?\d+", value):
        return int(value)
    if "number" in kinds and re.fullmatch(r"-?\d+(\.\d+)?", value):
        return float(value)
    if "boolean" in kinds and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if "null" in kinds and value.lower() in ("null", "none"):
        return None
    if kinds & {"array", "object"}:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def schema_problem(data: Any, schema: Mapping[str, Any]) -> str | None:
    """One sentence for the first way ``data`` breaks ``schema``, or None."""
    import jsonschema

    errors = jsonschema.exceptions
    try:
        kind = jsonschema.validators.validator_for(schema)
        kind.check_schema(schema)
        error = errors.best_match(kind(schema).iter_errors(data))
    except Exception as e:  # noqa: BLE001 - an untrusted schema must never crash resolve()
        return f"the server's input schema is invalid ({type(e).__name__})"
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message[:300]}" if where else error.message[:300]


def action_for(entry: ServerEntry, spec: ToolSpec) -> Action[Any]:
    description = " ".join(spec.description.split())[:MAX_DESCRIPTION] or spec.name
    return Action(
        name=spec.name,
        description=f"(MCP server `{entry.name}`) {description}",
        tier=tool_tier(entry, spec),
        params=params_model(spec),
        summary=partial(_summary, entry.name, spec.name),
        run=partial(_run, spec.name),
        timeout=entry.timeout + GRACE_S,
    )


def _summary(server: str, tool: str, params: BaseModel) -> str:
    args = json.dumps(params.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return f"MCP `{server}` tool `{tool}` with {args}"


def _run(tool: str, params: BaseModel, ctx: ActionContext) -> ToolResult:
    from tools import mcp_call  # the MCP client: imported inside the sandbox only

    return mcp_call.call(ServerEntry.model_validate(ctx.config), tool,
                         params.model_dump(mode="json"), ctx)


def _list(params: BaseModel, ctx: ActionContext) -> ToolResult:
    from tools import mcp_call

    return mcp_call.list_tools(ServerEntry.model_validate(ctx.config), ctx)


def build_toolset(entry: ServerEntry, specs: Sequence[ToolSpec]) -> Toolset[ServerEntry]:
    """The toolset of one server from its listed tools (allow-list applied, bad names
    skipped: :func:`rejected` says which and why)."""
    actions = [action_for(entry, s) for s in specs if entry.allows(s.name) and not _bad(s)]
    return Toolset(
        name=entry.name,
        description=entry.description or f"Tools of the MCP server `{entry.name}`.",
        config=ServerEntry,
        actions=actions,
        target=_target,
        egress=lambda a, p, c: c.endpoints(),
        secrets=lambda a, p, c: c.secret_refs(),
        mounts=lambda a, p, c: list(c.mounts),
        target_kinds=("mcp",),
        warm=partial(prestart_command, listing=_listing(specs)),
    )


def prestart_command(entry: ServerEntry, listing: str = "") -> list[str] | None:
    """How a warm-pool container starts a stdio server ahead of the call, for servers that
    need no secret (their ``env`` is minted per call, so those start with the call).

    ``listing`` (a digest of the tools listed) is part of the command, so once a server lists
    different tools, containers started before are retired instead of serving a stale one."""
    if entry.transport != "stdio" or entry.env:
        return None
    return ["python3", "-m", "sandbox.entrypoint", "--preload", "--mcp",
            entry.model_dump_json(), *(["--listing", listing] if listing else [])]


def _listing(specs: Sequence[ToolSpec]) -> str:
    blob = json.dumps([s.model_dump(mode="json") for s in specs], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def rejected(entry: ServerEntry, specs: Sequence[ToolSpec]) -> dict[str, str]:
    """Tools the server listed that opsbot will not offer, with the reason."""
    out = {}
    for spec in specs:
        if not entry.allows(spec.name):
            out[spec.name] = "not in the server's `tools` allow-list"
        elif problem := _bad(spec):
            out[spec.name] = problem
    return out


def _bad(spec: ToolSpec) -> str:
    if not TOOL_NAME.match(spec.name):
        return "its name is not 1-64 letters, digits, _ or -"
    if spec.input_schema.get("type", "object") != "object":
        return "its inputSchema is not an object schema"
    return ""


def _target(action: Action[Any], params: BaseModel, entry: ServerEntry) -> Target:
    return Target(kind="mcp", name=f"{entry.name} {action.name}",
                  attrs={"server": entry.name, "tool": action.name, "transport": entry.transport})


class _Any(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


def sandbox_action(action: str, config: Mapping[str, Any]) -> Action[Any] | None:
    """Inside the container: the action for an MCP request (``config`` is a ServerEntry dump).

    The host already validated the params against the tool's schema; the server checks
    them again, so here they pass through as given."""
    try:
        ServerEntry.model_validate(config)
    except ValueError:
        return None
    run = _list if action == LIST else partial(_run, action)
    return Action(name=action, description="", tier=Tier.PRODUCTION, params=_Any,
                  summary=lambda p: action, run=run)
