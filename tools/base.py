"""Typed actions: the unit of everything opsbot can do.

An :class:`Action` is data plus small functions (the shape HolmesGPT uses for its tools): a
pydantic params model, a description written for the LLM, a risk tier, a one-line ``summary``
an approver reads, and ``run(params, ctx)`` which executes *inside the sandbox container*.

A :class:`Toolset` groups the actions of one connector and knows, from the connector's config,
what a call touches (``target``), which host:port pairs it must reach (``egress``) and which
Vault secrets it needs (``secrets``). Those three are pure functions: the policy engine and the
sandbox read them before anything runs.

Usage::

    action = REDIS.action("info")
    params = action.params.model_validate({"section": "memory"})
    action.summary(params)           # "Read Redis INFO (memory)"
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

P = TypeVar("P", bound=BaseModel)
C = TypeVar("C", bound=BaseModel)


class Tier(IntEnum):
    """Autonomy tiers, lowest to highest risk (DESIGN §4)."""

    OBSERVE = 0  # read-only
    RECOMMEND = 1  # suggest, no change
    DRAFT = 2  # branch/PR, preview; no apply/merge
    SANDBOX_EXECUTE = 3  # changes to non-production targets
    PRODUCTION = 4  # changes to production; always gated

    @property
    def label(self) -> str:
        return f"{int(self)} {self.name.lower().replace('_', '-')}"


class Status(StrEnum):
    OK = "ok"
    ERROR = "error"
    NO_DATA = "no_data"
    DENIED = "denied"


class ToolResult(BaseModel):
    """What an action produced. Failures are values: the model and the user can act on them."""

    model_config = ConfigDict(extra="forbid")

    status: Status
    invocation: str
    output: str = ""
    data: Any = None
    error: str | None = None

    @classmethod
    def ok(cls, invocation: str, output: str, data: Any = None) -> ToolResult:
        return cls(status=Status.OK, invocation=invocation, output=output, data=data)

    @classmethod
    def fail(cls, invocation: str, error: str) -> ToolResult:
        return cls(status=Status.ERROR, invocation=invocation, error=error)

    @classmethod
    def no_data(cls, invocation: str, output: str) -> ToolResult:
        return cls(status=Status.NO_DATA, invocation=invocation, output=output)

    @property
    def text(self) -> str:
        """One human-readable rendering used in reports and fed to the LLM."""
        if self.status is Status.OK:
            return self.output
        if self.status is Status.NO_DATA:
            return self.output or "no data"
        return f"{self.status.value}: {self.error or self.output}"


class Endpoint(BaseModel):
    """A host:port an action needs to reach from inside the sandbox."""

    model_config = ConfigDict(frozen=True)

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class Mount(BaseModel):
    """A host directory an action's container sees (read-only unless ``writable``): how an
    operator hands a checkout to an MCP git server, for example. Declared in configuration,
    never by a call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(pattern=r"^/.+", description="Absolute path on the Docker host.")
    target: str = Field(pattern=r"^/.+", description="Absolute path inside the container.")
    writable: bool = False


class SecretKind(StrEnum):
    """How the credential broker (host side, ``sandbox/credentials/``) produces a secret."""

    STATIC = "static"  # one of opsbot's own settings (``static:GITHUB_TOKEN``)
    KV = "kv"  # a KV v2 secret, read with a token minted for the action
    DATABASE = "database"  # a database user created for the action (Vault database engine)
    SSH = "ssh"  # an SSH certificate signed for the action (Vault SSH engine)
    DOCKER = "docker"  # a token for opsbot's Docker API proxy, scoped to the action's requests
    VAULT = "vault"  # a Vault token whose policy grants the action's metadata paths alone
    GITHUB_APP = "github_app"  # a GitHub App installation token for one repo and permission set
    AWS = "aws"  # an STS session (AssumeRole) whose session policy allows the action's calls alone


class SecretRef(BaseModel):
    """A credential an action needs, produced for that action alone by the credential broker.

    ``name`` is how the action finds the value in :attr:`ActionContext.secrets`; ``path`` the
    Vault API path (``kv/data/redis/prod``, ``database/creds/redis-read``, ``ssh/sign/opsbot``);
    ``key`` the field of what Vault returns (``password``, ``username``, ``private_key`` ...).
    Refs that share kind, path and ``params`` are served by one issue: the username and the
    password of a dynamic database user belong together. ``params`` are passed to the engine
    (the SSH principal). ``static:NAME`` paths are of kind static.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    path: str
    key: str
    kind: SecretKind = SecretKind.KV
    params: tuple[tuple[str, str], ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _static_by_prefix(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" not in data and str(data.get("path", "")).startswith(
                STATIC):
            return {**data, "kind": SecretKind.STATIC}
        return data

    @classmethod
    def parse(cls, name: str, ref: str) -> SecretRef:
        """A connector setting: ``static:NAME`` (opsbot's own settings, e.g. GITHUB_TOKEN) or
        ``kv/data/<path>#<key>`` (Vault)."""
        if ref.startswith(STATIC):
            return cls(name=name, path=ref, key=ref.removeprefix(STATIC))
        path, _, key = ref.partition("#")
        return cls(name=name, path=path, key=key)

    @classmethod
    def login(cls, prefix: str, role: str) -> list[SecretRef]:
        """``<prefix>_username`` and ``<prefix>_password`` of a database user that the Vault
        database engine creates for the action from ``role`` (``database/creds/<role>``)."""
        return [cls(name=f"{prefix}_{key}", path=role, key=key, kind=SecretKind.DATABASE)
                for key in ("username", "password")]

    @staticmethod
    def check(ref: str | None, static_example: str | None = "static:NAME") -> str | None:
        """Validate a setting :meth:`parse` will read; ``static_example=None`` allows Vault
        references only."""
        forms = [_VAULT_REF] + ([_STATIC_REF] if static_example else [])
        if ref is None or any(re.fullmatch(form, ref) for form in forms):
            return ref
        example = f"{static_example} or " if static_example else ""
        raise ValueError(f"must look like {example}kv/data/<path>#<key>")

    @staticmethod
    def check_role(path: str | None, verb: str = "creds") -> str | None:
        """Validate a setting naming a Vault role path: ``<mount>/creds/<role>`` (database) or
        ``<mount>/sign/<role>`` (SSH)."""
        if path is None or re.fullmatch(ROLE_PATH.format(verb=verb), path):
            return path
        raise ValueError(f"must look like {'database' if verb == 'creds' else 'ssh'}/{verb}/<role>")


STATIC = "static:"
_STATIC_REF = r"static:[A-Z][A-Z0-9_]*"
_VAULT_REF = r"[\w./-]+#[\w.-]+"
# A plain Vault path ending in <verb>/<role>: no globs (`*`, `+`), which would widen a grant.
ROLE_PATH = r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/{verb}/[A-Za-z0-9_.-]+"


class Target(BaseModel):
    """What a call touches, as the policy engine sees it.

    ``kind`` is the connector's target type (``redis``, ``github_repo``, ``pulumi_stack``,
    ``container``), ``name`` a stable human-readable identifier, and ``attrs`` the facts that
    policy rules match on (``host``, ``db``, ``env``, ``branch``, labels ...).
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    name: str
    attrs: dict[str, str] = {}

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass
class ActionContext:
    """Everything ``Action.run`` gets inside the container besides its params."""

    config: Mapping[str, Any]
    secrets: Mapping[str, str] = field(default_factory=dict)
    endpoints: Mapping[str, str] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda text: None

    def address(self, host: str, port: int) -> tuple[str, int]:
        """Where to connect for a declared endpoint (the sandbox may route it elsewhere)."""
        mapped = self.endpoints.get(f"{host}:{port}")
        if mapped is None:
            return host, port
        mhost, _, mport = mapped.rpartition(":")
        return mhost, int(mport)


@dataclass(frozen=True)
class Check(Generic[P]):
    """How to tell whether a change held: a read-only ``action`` of the same toolset, called
    with ``params(change_params)``, whose result means "fixed" when ``fixed(result)`` is true.
    ``expect`` says what "fixed" means, for the report ("no key left: EXISTS = 0").

    The run executes it after the change, through policy like any call (tier 0, so no
    approval), and reports whether the fix held with the check's output as evidence::

        Action(name="del", ..., check=Check("exists", lambda p: {"keys": p.keys, "db": p.db},
                                            lambda r: r.data["exists"] == 0, "no key left"))
    """

    action: str
    params: Callable[[P], dict[str, Any]]
    fixed: Callable[[ToolResult], bool]
    expect: str


@dataclass(frozen=True)
class Action(Generic[P]):
    """One typed thing opsbot can do. ``run`` executes inside the sandbox; ``check`` (optional)
    is the follow-up that tells whether a change held."""

    name: str
    description: str
    tier: Tier
    params: type[P]
    summary: Callable[[P], str]
    run: Callable[[P, ActionContext], ToolResult]
    timeout: float = 30.0
    preview: Callable[[P, ActionContext], ToolResult] | None = None
    check: Check[P] | None = None


@dataclass(frozen=True)
class Toolset(Generic[C]):
    """The actions of one connector plus the pure functions that describe their reach."""

    name: str
    description: str
    config: type[C]
    actions: Sequence[Action[Any]]
    target: Callable[[Action[Any], BaseModel, C], Target]
    egress: Callable[[Action[Any], BaseModel, C], list[Endpoint]] = lambda a, p, c: []
    secrets: Callable[[Action[Any], BaseModel, C], list[SecretRef]] = lambda a, p, c: []
    # The Target.kind values this toolset produces (policy files are checked against them).
    target_kinds: tuple[str, ...] = ()
    # Config field -> the setting (environment variable) that fills it. The connector is
    # enabled when the first one is set; the rest are optional. Empty: wired by hand.
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: Callable[[Action[Any], BaseModel, C], list[Mount]] = lambda a, p, c: []
    # argv of a pooled container made ready for this toolset's calls ahead of time (e.g. an
    # MCP server already started); None: the common warm pool. Never with secrets.
    warm: Callable[[C], list[str] | None] = lambda c: None
    # Modules the actions import when they run (their client libraries): a pooled container
    # of a deployment that configured this toolset imports them ahead (sandbox/entrypoint.py).
    preload: tuple[str, ...] = ()

    def action(self, name: str) -> Action[Any] | None:
        return next((a for a in self.actions if a.name == name), None)
