"""Vault (or OpenBao) connector: look at Vault itself — never at a secret's value.

Tier 0: ``health`` and ``seal_status`` (unauthenticated endpoints), ``metadata`` of a KV v2
secret (versions, created/deleted/destroyed times, custom metadata *keys*), ``secrets`` under a
prefix (names only), ``token`` and ``lease`` lookups (by accessor, by lease id), ``leases``
under a prefix. Tier 4: ``revoke_lease`` (previewed with the lease's lookup).

Each action that needs a token gets one minted for it alone by the credential broker (kind
``vault``, ``sandbox/credentials/vault_token.py``): its policy grants exactly the paths this
call names (:func:`scopes`), all of them metadata paths — the broker refuses anything under a
KV ``data/`` path, so even a bug here cannot read a value. What leaves the action is built from
a fixed list of fields (:data:`METADATA`, :data:`TOKEN`, :data:`LEASE`), never the raw answer.
KV mounts are single path segments (``kv``, ``secret``) named in ``OPSBOT_VAULT_KV_MOUNTS``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from tools.base import (
    Action,
    ActionContext,
    Endpoint,
    SecretKind,
    SecretRef,
    Target,
    Tier,
    ToolResult,
    Toolset,
)
from tools.catalog import CallError

SEGMENT = r"[A-Za-z0-9_.-]+"
PLAIN = rf"^{SEGMENT}(/{SEGMENT}){{0,31}}$"  # no globs, no empty segment


def _no_dots(path: str) -> str:
    if {".", ".."} & set(path.split("/")):
        raise ValueError("path segments `.` and `..` are not allowed")
    return path


Path = Annotated[str, AfterValidator(_no_dots)]
MOUNT = r"^[A-Za-z0-9_-]{1,64}$"
METADATA = ("current_version", "oldest_version", "max_versions", "created_time", "updated_time",
            "delete_version_after", "cas_required")
VERSION = ("created_time", "deletion_time", "destroyed")
TOKEN = ("accessor", "display_name", "policies", "type", "path", "creation_time", "issue_time",
         "expire_time", "ttl", "creation_ttl", "explicit_max_ttl", "num_uses", "orphan",
         "renewable", "entity_id", "meta")
LEASE = ("id", "issue_time", "expire_time", "last_renewal", "renewable", "ttl")


class VaultConnectorConfig(BaseModel):
    """Which Vault (the one opsbot mints credentials from: ``VAULT_ADDR``) and which KV v2
    mounts ``metadata`` and ``secrets`` may look into (``OPSBOT_VAULT_KV_MOUNTS``)."""

    model_config = ConfigDict(frozen=True)

    addr: str
    mounts: tuple[str, ...] = ("kv",)

    @field_validator("addr")
    @classmethod
    def _url(cls, addr: str) -> str:
        parts = urlsplit(addr)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            raise ValueError("must look like https://vault.example:8200")
        return addr.rstrip("/")

    @field_validator("mounts", mode="before")
    @classmethod
    def _mounts(cls, mounts: Any) -> Any:
        if isinstance(mounts, str):
            mounts = [m.strip().strip("/") for m in mounts.split(",") if m.strip()]
        bad = [m for m in mounts if not re.fullmatch(MOUNT, m)]
        if bad or not mounts:
            raise ValueError("must list KV v2 mounts by name, comma-separated (e.g. kv,secret)")
        return tuple(mounts)

    @property
    def host(self) -> str:
        return urlsplit(self.addr).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.addr)
        return parts.port or (443 if parts.scheme == "https" else 8200)


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Mount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mount: str | None = Field(None, pattern=MOUNT, description="KV v2 mount; default: the "
                              "first in OPSBOT_VAULT_KV_MOUNTS.")


class MetadataParams(_Mount):
    path: Path = Field(pattern=PLAIN, max_length=512,
                       description="The secret's path inside the mount, e.g. app/db.")


class SecretsParams(_Mount):
    prefix: Path = Field("", pattern=rf"^$|{PLAIN}", max_length=512,
                        description="List secret names under this prefix (empty: the top).")


class AccessorParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accessor: str = Field(pattern=r"^[A-Za-z0-9._-]{8,128}$", description="A token accessor.")


class LeaseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lease_id: Path = Field(pattern=PLAIN, max_length=512,
                          description="A lease id, e.g. database/creds/readonly/AbC123.")


class LeasesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: Path = Field(pattern=PLAIN, max_length=512,
                         description="List leases under this prefix, e.g. database/creds/readonly.")


def _mount(p: _Mount, config: VaultConnectorConfig) -> str:
    mount = p.mount or config.mounts[0]
    if mount not in config.mounts:
        raise CallError(f"`{mount}` is not a KV mount opsbot may look into "
                        f"({', '.join(config.mounts)}; OPSBOT_VAULT_KV_MOUNTS).")
    return mount


def scopes(action: Action[Any], p: BaseModel, config: VaultConnectorConfig) -> list[str]:
    """``path=capabilities`` the action's token needs: one request each, nothing more."""
    name = action.name
    if name == "metadata":
        return [f"{_mount(p, config)}/metadata/{p.path}=read"]  # type: ignore[attr-defined]
    if name == "secrets":
        prefix = p.prefix  # type: ignore[attr-defined]
        return [f"{_mount(p, config)}/metadata" + (f"/{prefix}" if prefix else "") + "=list"]
    if name == "token":
        return ["auth/token/lookup-accessor=update"]
    if name == "leases":
        return [f"sys/leases/lookup/{p.prefix}=list,sudo"]  # type: ignore[attr-defined]
    if name == "lease" or (name == "revoke_lease" and action.tier <= Tier.RECOMMEND):
        return ["sys/leases/lookup=update"]  # a revoke's preview only looks the lease up
    if name == "revoke_lease":
        return [f"sys/leases/revoke/{p.lease_id}=update"]  # type: ignore[attr-defined]
    return []  # health, seal status: no token at all


# --- what runs in the sandbox ------------------------------------------------------------------

class VaultAnswer(Exception):
    """Vault said no; ``str(e)`` is the sentence."""


def _request(ctx: ActionContext, method: str, path: str, body: dict | None = None
             ) -> tuple[int, dict[str, Any]]:
    import requests

    config = VaultConnectorConfig.model_validate(ctx.config)
    host, port = ctx.address(config.host, config.port)
    url = f"{urlsplit(config.addr).scheme}://{host}:{port}/v1/{quote(path, safe='/')}"
    token = ctx.secrets.get("vault_token")
    headers = {"X-Vault-Token": token} if token else {}
    reply = requests.request(method, url, json=body, headers=headers, timeout=10,
                             allow_redirects=False)
    try:
        answer = reply.json() if reply.content else {}
    except ValueError:
        answer = {}
    return reply.status_code, answer if isinstance(answer, dict) else {}


def _data(ctx: ActionContext, method: str, path: str, body: dict | None = None,
          missing: str = "") -> dict[str, Any] | None:
    status, answer = _request(ctx, method, path, body)
    if status == 404 and missing:
        return None
    if status >= 400:
        errors = "; ".join(str(e).strip() for e in answer.get("errors") or []) or "no message"
        raise VaultAnswer(f"Vault answered {status}: {' '.join(errors.split())}")
    return answer.get("data") or {}


def _pick(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: data[k] for k in keys if k in data}


def _health(p: NoParams, ctx: ActionContext) -> ToolResult:
    status, answer = _request(ctx, "GET", "sys/health")  # 429/472/473/501/503 carry a body too
    keep = _pick(answer, ("initialized", "sealed", "standby", "version", "cluster_name",
                          "server_time_utc", "replication_dr_mode", "performance_standby"))
    state = "sealed" if keep.get("sealed") else "standby" if keep.get("standby") else "active"
    if not keep.get("initialized", True):
        state = "not initialized"
    return ToolResult.ok("GET /v1/sys/health", f"Vault {keep.get('version', '?')}: {state} "
                         f"(HTTP {status}); cluster {keep.get('cluster_name', '?')}", keep)


def _seal(p: NoParams, ctx: ActionContext) -> ToolResult:
    _, answer = _request(ctx, "GET", "sys/seal-status")
    keep = _pick(answer, ("type", "initialized", "sealed", "t", "n", "progress", "version",
                          "storage_type", "cluster_name"))
    text = (f"{'sealed' if keep.get('sealed') else 'unsealed'} ({keep.get('type')}, "
            f"threshold {keep.get('t')} of {keep.get('n')}, progress {keep.get('progress')})")
    return ToolResult.ok("GET /v1/sys/seal-status", text, keep)


def _metadata(p: MetadataParams, ctx: ActionContext) -> ToolResult:
    mount = _mount(p, VaultConnectorConfig.model_validate(ctx.config))
    inv = f"GET /v1/{mount}/metadata/{p.path}"
    data = _data(ctx, "GET", f"{mount}/metadata/{p.path}", missing="yes")
    if data is None:
        return ToolResult.no_data(inv, f"No secret at {mount}/{p.path}.")
    keep = _pick(data, METADATA)
    keep["versions"] = {n: _pick(v, VERSION) for n, v in (data.get("versions") or {}).items()}
    keep["custom_metadata_keys"] = sorted(data.get("custom_metadata") or {})
    lines = [f"{mount}/{p.path}: version {keep.get('current_version')} (oldest "
             f"{keep.get('oldest_version')}), created {keep.get('created_time')}, updated "
             f"{keep.get('updated_time')}"]
    for number, version in sorted(keep["versions"].items(), key=lambda kv: int(kv[0])):
        gone = (" destroyed" if version.get("destroyed") else
                f" deleted {version['deletion_time']}" if version.get("deletion_time") else "")
        lines.append(f"  v{number}: created {version.get('created_time')}{gone}")
    if keep["custom_metadata_keys"]:
        lines.append("custom metadata keys: " + ", ".join(keep["custom_metadata_keys"]))
    return ToolResult.ok(inv, "\n".join(lines), keep)


def _secrets(p: SecretsParams, ctx: ActionContext) -> ToolResult:
    mount = _mount(p, VaultConnectorConfig.model_validate(ctx.config))
    path = f"{mount}/metadata" + (f"/{p.prefix}" if p.prefix else "")
    inv = f"LIST /v1/{path}"
    data = _data(ctx, "LIST", path, missing="yes")
    keys = list((data or {}).get("keys") or [])
    if not keys:
        return ToolResult.no_data(inv, f"No secrets under {mount}/{p.prefix}.")
    return ToolResult.ok(inv, "\n".join(keys), keys)


def _token(p: AccessorParams, ctx: ActionContext) -> ToolResult:
    data = _data(ctx, "POST", "auth/token/lookup-accessor", {"accessor": p.accessor}) or {}
    keep = _pick(data, TOKEN)
    text = (f"token {keep.get('accessor')} ({keep.get('display_name')}, {keep.get('type')}): "
            f"policies {', '.join(keep.get('policies') or []) or 'none'}; ttl {keep.get('ttl')} s, "
            f"expires {keep.get('expire_time') or 'never'}; created via {keep.get('path')}")
    return ToolResult.ok("POST /v1/auth/token/lookup-accessor", text, keep)


def _lease(p: LeaseParams, ctx: ActionContext) -> ToolResult:
    data = _data(ctx, "PUT", "sys/leases/lookup", {"lease_id": p.lease_id}) or {}
    keep = _pick(data, LEASE)
    text = (f"lease {keep.get('id')}: issued {keep.get('issue_time')}, expires "
            f"{keep.get('expire_time')} (ttl {keep.get('ttl')} s), renewable "
            f"{keep.get('renewable')}, last renewed {keep.get('last_renewal') or 'never'}")
    return ToolResult.ok("PUT /v1/sys/leases/lookup", text, keep)


def _leases(p: LeasesParams, ctx: ActionContext) -> ToolResult:
    inv = f"LIST /v1/sys/leases/lookup/{p.prefix}/"
    data = _data(ctx, "LIST", f"sys/leases/lookup/{p.prefix}/", missing="yes")
    keys = list((data or {}).get("keys") or [])
    if not keys:
        return ToolResult.no_data(inv, f"No leases under {p.prefix}.")
    return ToolResult.ok(inv, "\n".join(keys), keys)


def _revoke(p: LeaseParams, ctx: ActionContext) -> ToolResult:
    _data(ctx, "PUT", f"sys/leases/revoke/{p.lease_id}")
    return ToolResult.ok(f"PUT /v1/sys/leases/revoke/{p.lease_id}",
                         f"Lease {p.lease_id} revoked.")


def _guarded(run):
    """Failures as values: what Vault refused, or a connection problem."""
    def guarded(p: BaseModel, ctx: ActionContext) -> ToolResult:
        import requests

        try:
            return run(p, ctx)
        except (VaultAnswer, CallError) as e:
            return ToolResult.fail("vault", str(e))
        except requests.RequestException as e:
            return ToolResult.fail("vault", f"Cannot reach Vault: {type(e).__name__}.")

    return guarded


def _read(name: str, description: str, params: type[BaseModel], summary, run) -> Action[Any]:
    return Action(name=name, description=description, tier=Tier.OBSERVE, params=params,
                  summary=summary, run=_guarded(run), timeout=20)


ACTIONS: list[Action[Any]] = [
    _read("health", "Vault's health: initialized, sealed, standby, version.", NoParams,
          lambda p: "Read Vault's health", _health),
    _read("seal_status", "Vault's seal status: sealed or not, seal type, unseal threshold and "
          "progress.", NoParams, lambda p: "Read Vault's seal status", _seal),
    _read("metadata", "A KV v2 secret's metadata: versions with their created, deleted and "
          "destroyed times, and custom metadata keys. Never the secret's value.", MetadataParams,
          lambda p: f"Read the metadata of secret {p.mount or ''}{'/' if p.mount else ''}{p.path}",
          _metadata),
    _read("secrets", "Names of the KV v2 secrets under a prefix (no values).", SecretsParams,
          lambda p: f"List secret names under {p.prefix or 'the top'}", _secrets),
    _read("token", "Look a token up by its accessor: policies, TTL, expiry, how it was created.",
          AccessorParams, lambda p: f"Look up the token with accessor {p.accessor}", _token),
    _read("lease", "Look a lease up by its id: issue and expiry times, TTL, renewable.",
          LeaseParams, lambda p: f"Look up lease {p.lease_id}", _lease),
    _read("leases", "List the lease ids under a prefix (e.g. database/creds/readonly).",
          LeasesParams, lambda p: f"List leases under {p.prefix}", _leases),
    Action(name="revoke_lease", description="Revoke one lease now (the credential it backs stops "
           "working: a database user is dropped).", tier=Tier.PRODUCTION, params=LeaseParams,
           summary=lambda p: f"Revoke Vault lease {p.lease_id}", run=_guarded(_revoke),
           timeout=30, preview=_guarded(_lease)),
]


def _target(action: Action[Any], p: BaseModel, config: VaultConnectorConfig) -> Target:
    attrs = {"host": config.host, "action": action.name}
    if isinstance(p, _Mount):
        mount = _mount(p, config)
        path = getattr(p, "path", None) or getattr(p, "prefix", "")
        return Target(kind="vault", name=f"{mount}/{path}".rstrip("/"),
                      attrs=attrs | {"mount": mount, "path": path})
    if isinstance(p, AccessorParams):
        return Target(kind="vault", name=f"token {p.accessor}", attrs=attrs | {
            "accessor": p.accessor})
    if isinstance(p, LeaseParams):
        prefix = p.lease_id.rpartition("/")[0]
        return Target(kind="vault", name=p.lease_id, attrs=attrs | {
            "lease_id": p.lease_id, "prefix": prefix})
    if isinstance(p, LeasesParams):
        return Target(kind="vault", name=p.prefix, attrs=attrs | {"prefix": p.prefix})
    return Target(kind="vault", name=config.host, attrs=attrs)


def _egress(action: Action[Any], p: BaseModel, config: VaultConnectorConfig) -> list[Endpoint]:
    return [Endpoint(host=config.host, port=config.port)]


def _secret_refs(action: Action[Any], p: BaseModel, config: VaultConnectorConfig
                 ) -> list[SecretRef]:
    needed = scopes(action, p, config)
    if not needed:
        return []
    return [SecretRef(name="vault_token", path="vault-token", key="token", kind=SecretKind.VAULT,
                      params=(("scopes", ";".join(needed)),))]


TOOLSET: Toolset[VaultConnectorConfig] = Toolset(
    name="vault",
    description="Vault/OpenBao itself: health, seal status, KV secret metadata (never values), "
    "token and lease lookups; with approval, revoke a lease.",
    config=VaultConnectorConfig,
    actions=ACTIONS,
    target=_target,
    egress=_egress,
    secrets=_secret_refs,
    target_kinds=("vault",),
    env={"mounts": "OPSBOT_VAULT_KV_MOUNTS", "addr": "VAULT_ADDR"},
    preload=("requests",),
)
