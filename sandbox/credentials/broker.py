"""The credential broker: per-action Vault tokens that can read exactly what the action declared.

opsbot holds one Vault token and never hands it to an action. For each action the broker writes
a throwaway ACL policy granting ``read`` on the declared KV v2 paths only, mints a child token
with that policy alone (TTL = action timeout + margin, one use per path, not renewable), reads
the secrets with it, registers every value with :data:`tools.secrets.REDACTOR`, and returns a
:class:`Lease`. ``SecretRef(path="static:GITHUB_TOKEN")`` resolves from the app's settings
instead, with no Vault call (its ``key`` is ignored). Usage::

    broker = CredentialBroker(VaultConfig(addr=..., token=...), {"GITHUB_TOKEN": token})
    lease = await broker.mint(run_id, call.id, resolved.secrets, ttl_s=action.timeout)
    try:
        request.secrets = lease.values          # {SecretRef.name: SecretStr}
        ...
    finally:
        await broker.revoke(lease)              # idempotent; records Vault trouble, never raises
        audit.write("credential_lease", lease.audit())

Whatever keeps an action from its credentials is a :class:`VaultError` whose text is the
sentence the user reads. hvac is synchronous, so each Vault conversation runs in one worker
thread. opsbot's own token needs :data:`PARENT_POLICY` (``check`` verifies it at boot).
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets as _random
import socket
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import hvac
import hvac.exceptions as hvac_errors
import requests
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from tools.base import SecretRef
from tools.secrets import REDACTOR

log = structlog.get_logger(__name__)

STATIC_PREFIX = "static:"
POLICY_PREFIX = "opsbot-action-"
NOT_RUN = "the action did not run."
# Plain path segments only: `*` and `+` are policy globs and would widen the grant.
_PATH = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+")
_SLUG = re.compile(r"[^a-z0-9]+")

# sudo on auth/token/create lets a non-root token grant a policy it does not hold itself.
PARENT_POLICY = """\
path "sys/policies/acl/opsbot-action-*" { capabilities = ["create", "update", "delete"] }
path "auth/token/create" { capabilities = ["update", "sudo"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
"""
_REQUIRED = {
    "sys/policies/acl/opsbot-action-check": ("create", "update", "delete"),
    "auth/token/create": ("update", "sudo"),
    "auth/token/revoke-accessor": ("update",),
}
_CHILD = {"no_default_policy": True, "renewable": False, "type": "service",
          "display_name": "opsbot-action"}


class VaultError(RuntimeError):
    """Credentials could not be provided; ``message`` (= ``str(e)``) is the sentence users read."""

    @property
    def message(self) -> str:
        return str(self)


class VaultConfig(BaseModel):
    """How opsbot reaches Vault or OpenBao; the app builds it from VAULT_ADDR and VAULT_TOKEN."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    addr: str
    token: SecretStr
    ttl_margin_s: float = Field(15.0, ge=0, le=3600)
    namespace: str | None = None
    timeout_s: float = Field(10.0, gt=0, le=120)

    @field_validator("addr")
    @classmethod
    def _http_url(cls, addr: str) -> str:
        if not re.fullmatch(r"https?://[^/\s]+/?", addr):
            raise ValueError("must look like http://127.0.0.1:8200 or https://vault.example:8200")
        return addr.rstrip("/")

    @field_validator("token")
    @classmethod
    def _non_empty(cls, token: SecretStr) -> SecretStr:
        if not token.get_secret_value().strip():
            raise ValueError("is empty")
        return token


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Lease:
    """One action's credentials plus what the audit log needs to know about them.

    Never holds the child token: only its accessor, which is enough to revoke it. ``revoke``
    empties ``values`` even when Vault cannot be reached (a later ``revoke`` may retry).
    """

    run_id: str
    call_id: str
    values: dict[str, SecretStr] = field(default_factory=dict, repr=False)
    names: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    static: tuple[str, ...] = ()
    policy: str | None = None
    accessor: str | None = None
    ttl_s: int = 0
    num_uses: int = 0
    created_at: datetime = field(default_factory=_now)
    revoked_at: datetime | None = None
    revoke_error: str | None = None

    @property
    def policies(self) -> list[str]:
        return [self.policy] if self.policy else []

    def audit(self) -> dict[str, Any]:
        """A JSON-ready description for the audit row: no token, no secret value.

        Leaves out run_id and call_id, which the audit row already carries.
        """
        return {
            "accessor": self.accessor,
            "policies": self.policies,
            "paths": list(self.paths),
            "static": list(self.static),
            "names": list(self.names),
            "ttl_s": self.ttl_s,
            "num_uses": self.num_uses,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revoke_error": self.revoke_error,
        }


@dataclass(frozen=True)
class _Plan:
    static: dict[str, str]  # SecretRef.name -> static setting name
    vault: dict[str, tuple[str, str]]  # SecretRef.name -> (path, key)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(path for path, _ in self.vault.values()))


def plan(refs: list[SecretRef]) -> _Plan:
    """Split refs into static and Vault ones, refusing anything that would widen a grant."""
    static: dict[str, str] = {}
    vault: dict[str, tuple[str, str]] = {}
    for ref in refs:
        if ref.name in static or ref.name in vault:
            raise ValueError(f"two secrets are both named `{ref.name}`; names must be unique.")
        if ref.path.startswith(STATIC_PREFIX):
            static[ref.name] = _static_name(ref)
        else:
            vault[ref.name] = (_vault_path(ref), ref.key)
    return _Plan(static, vault)


def _static_name(ref: SecretRef) -> str:
    name = ref.path.removeprefix(STATIC_PREFIX).strip()
    if not name:
        raise VaultError(f"secret `{ref.name}` names no static setting (`static:` needs a name).")
    return name


def _vault_path(ref: SecretRef) -> str:
    if not _PATH.fullmatch(ref.path) or ".." in ref.path.split("/"):
        raise VaultError(
            f"secret path `{ref.path}` is not a plain KV v2 API path like kv/data/redis/prod "
            f"(no wildcards, no leading slash); {NOT_RUN}"
        )
    if not ref.key:
        raise VaultError(f"secret {ref.path} is declared without a key; {NOT_RUN}")
    return ref.path


def policy_hcl(paths: tuple[str, ...]) -> str:
    """The per-action ACL: read on each declared path, nothing else (paths are pre-validated)."""
    return "".join(f'path "{p}" {{\n  capabilities = ["read"]\n}}\n' for p in paths)


def policy_name(run_id: str, call_id: str) -> str:
    slug = "-".join(_SLUG.sub("-", s.lower()).strip("-")[:40] for s in (run_id, call_id))
    return f"{POLICY_PREFIX}{slug}-{_random.token_hex(4)}"


class CredentialBroker:
    """Mints, reads and revokes per-action credentials. One per process; safe to share."""

    def __init__(
        self, config: VaultConfig | None, static: Mapping[str, SecretStr] = MappingProxyType({})
    ) -> None:
        self._config = config
        self._static = dict(static)
        self._parent_client: hvac.Client | None = None
        self._orphans: set[asyncio.Task[None]] = set()

    async def mint(
        self, run_id: str, call_id: str, secrets: list[SecretRef], ttl_s: float
    ) -> Lease:
        """Resolve every declared secret or raise :class:`VaultError`; all or nothing."""
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be positive seconds, got {ttl_s!r}.")
        wanted = plan(secrets)
        names = tuple(ref.name for ref in secrets)
        lease = Lease(run_id, call_id, names=names, static=tuple(wanted.static.values()))
        lease.values.update(self._static_values(wanted.static))
        if wanted.vault:
            ttl = math.ceil(ttl_s + self._require_config().ttl_margin_s)
            lease.values.update(await self._issue_in_thread(lease, wanted, ttl))
        log.info("vault.lease.minted", **_log_fields(lease))
        return lease

    async def revoke(self, lease: Lease) -> None:
        """Revoke the token and delete its policy. Idempotent, and fine on a half-built lease.

        Vault trouble lands in ``lease.revoke_error`` (and a warning) instead of an exception,
        so a ``finally`` never masks the action's own outcome; the token still dies at its TTL.
        """
        if lease.revoked_at is not None:
            return
        lease.values.clear()  # the action is over either way
        if lease.accessor or lease.policy:
            await asyncio.to_thread(self._revoke, lease)
        else:
            lease.revoked_at = _now()
        if lease.revoked_at is not None:
            log.info("vault.lease.revoked", **_log_fields(lease))

    async def check(self) -> None:
        """Boot check: Vault reachable and unsealed, VAULT_TOKEN valid and allowed its job.

        Without a config there is nothing to check (static secrets only).
        """
        if self._config is not None:
            await asyncio.to_thread(self._check)

    def _require_config(self) -> VaultConfig:
        if self._config is None:
            raise VaultError(
                "this action needs secrets from Vault, but VAULT_ADDR and VAULT_TOKEN are not "
                "set; set both and restart opsbot. The action did not run."
            )
        return self._config

    def _static_values(self, wanted: dict[str, str]) -> dict[str, SecretStr]:
        values = {}
        for ref_name, setting in wanted.items():
            value = self._static.get(setting)
            if value is None:
                raise VaultError(f"the static secret {setting} is not set in opsbot's settings; "
                                 f"{NOT_RUN}")
            REDACTOR.add(value.get_secret_value())
            values[ref_name] = value
        return values

    async def _issue_in_thread(self, lease: Lease, wanted: _Plan, ttl: int) -> Any:
        """Run ``_issue`` in a worker thread; if we are cancelled, revoke once it finishes."""
        task = asyncio.ensure_future(asyncio.to_thread(self._issue, lease, wanted, ttl))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(lambda done: self._revoke_later(lease, done))
            raise

    def _revoke_later(self, lease: Lease, done: asyncio.Future[Any]) -> None:
        if not done.cancelled():
            done.exception()  # mark retrieved: a failed mint has already cleaned up after itself
        orphan = asyncio.get_running_loop().create_task(self.revoke(lease))
        self._orphans.add(orphan)
        orphan.add_done_callback(self._orphans.discard)

    # --- synchronous Vault conversations, each run in one worker thread ---

    def _issue(self, lease: Lease, wanted: _Plan, ttl: int) -> dict[str, SecretStr]:
        lease.paths = wanted.paths
        try:
            return _pick(wanted, self._read_all(lease, self._create_token(lease, ttl)))
        except BaseException:
            self._revoke(lease)
            raise

    def _create_token(self, lease: Lease, ttl: int) -> str:
        """Write the per-action policy, mint the child token and return it (kept nowhere)."""
        parent = self._parent()
        lease.policy = policy_name(lease.run_id, lease.call_id)
        with self._translate("write the action's policy"):
            parent.sys.create_or_update_acl_policy(lease.policy, policy_hcl(lease.paths))
        meta = {"run_id": lease.run_id, "call_id": lease.call_id}
        with self._translate("mint the action's token"):
            auth = parent.auth.token.create(
                policies=[lease.policy], ttl=f"{ttl}s", explicit_max_ttl=f"{ttl}s",
                num_uses=len(lease.paths), meta=meta, **_CHILD,
            )["auth"]
        lease.accessor = auth["accessor"]
        lease.ttl_s = int(auth.get("lease_duration", ttl))
        lease.num_uses = int(auth.get("num_uses", len(lease.paths)))
        lease.created_at = _now()
        return auth["client_token"]

    def _read_all(self, lease: Lease, token: str) -> dict[str, dict[str, Any]]:
        child = self._client(token)
        try:
            return {path: self._read(child, path) for path in lease.paths}
        finally:
            child.adapter.close()

    def _read(self, child: hvac.Client, path: str) -> dict[str, Any]:
        with self._translate(f"read secret {path}", denied=path):
            body = child.read(path)
        if body is None:
            raise VaultError(f"secret {path} does not exist in Vault at {self._addr}; {NOT_RUN}")
        data = (body.get("data") or {}).get("data")
        if not isinstance(data, dict):
            raise VaultError(f"secret {path} is not a KV v2 secret (kv/data/<path>); {NOT_RUN}")
        return data

    def _revoke(self, lease: Lease) -> None:
        """Revoke the token, then delete the policy (which on its own also disarms the token)."""
        parent = self._parent()
        steps = [
            ("revoke the action's token", parent.auth.token.revoke_accessor, lease.accessor),
            ("delete the action's policy", parent.sys.delete_acl_policy, lease.policy),
        ]
        tail = f"token {lease.accessor} still expires at its TTL."
        problems = []
        for doing, call, arg in steps:
            try:
                if arg:
                    with self._translate(doing, tail=tail):
                        call(arg)
            except VaultError as e:
                problems.append(str(e))
        lease.revoke_error = " ".join(dict.fromkeys(problems)) or None  # one sentence per cause
        if problems:
            log.warning("vault.lease.revoke_failed", **_log_fields(lease))
        else:
            lease.revoked_at = _now()

    def _check(self) -> None:
        with self._translate("check VAULT_TOKEN", tail="opsbot cannot mint credentials."):
            caps = self._parent().adapter.post(
                "/v1/sys/capabilities-self", json={"paths": list(_REQUIRED)}
            )["data"]
        for path, needed in _REQUIRED.items():
            held = set(caps.get(path, []))
            missing = [] if "root" in held else [c for c in needed if c not in held]
            if missing:
                raise VaultError(
                    f"VAULT_TOKEN lacks `{'`, `'.join(missing)}` on {path}; grant it the policy "
                    "in sandbox.credentials.PARENT_POLICY so opsbot can mint per-action credentials."
                )

    # --- clients and error translation ---

    @property
    def _addr(self) -> str:
        return self._require_config().addr

    def _parent(self) -> hvac.Client:
        """opsbot's own client, shared by worker threads (requests' pool is thread-safe)."""
        if self._parent_client is None:
            self._parent_client = self._client(self._require_config().token.get_secret_value())
        return self._parent_client

    def _client(self, token: str) -> hvac.Client:
        config = self._require_config()
        return hvac.Client(
            url=config.addr, token=token, namespace=config.namespace, timeout=config.timeout_s
        )

    @contextmanager
    def _translate(self, doing: str, denied: str = "", tail: str = NOT_RUN) -> Iterator[None]:
        """Turn hvac/requests exceptions into one sentence naming Vault, the step and the cause.

        ``denied`` names the secret path when a permission error is the child token's, not ours.
        """
        at = f"Vault at {self._addr}"
        try:
            yield
        except requests.RequestException as e:
            cause = _network_cause(e, self._require_config().timeout_s)
            raise VaultError(f"{at} is unreachable ({cause}); {tail}") from None
        except hvac_errors.Forbidden:
            raise VaultError(_forbidden(at, doing, denied) + tail) from None
        except hvac_errors.VaultDown:
            raise VaultError(f"{at} is sealed or unavailable; {tail}") from None
        except hvac_errors.VaultError as e:
            raise VaultError(f"{at} could not {doing}: {_vault_text(e)}; {tail}") from None


def _pick(wanted: _Plan, documents: dict[str, dict[str, Any]]) -> dict[str, SecretStr]:
    values = {}
    for name, (path, key) in wanted.vault.items():
        if key not in documents[path]:
            raise VaultError(f"secret {path} has no key `{key}`; {NOT_RUN}")
        value = str(documents[path][key])
        REDACTOR.add(value)
        values[name] = SecretStr(value)
    return values


def _forbidden(at: str, doing: str, path: str) -> str:
    if path:
        return (f"{at} denied reading secret {path} (permission denied): check that it is a "
                "KV v2 API path on an enabled mount; ")
    return (f"{at} rejected VAULT_TOKEN while trying to {doing} (permission denied): the token "
            "is invalid, expired or revoked, or lacks the capability; ")


def _network_cause(error: BaseException, timeout: float) -> str:
    for cause in _chain(error):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        if isinstance(cause, ssl.SSLError):
            return "TLS handshake failed"
        if isinstance(cause, (requests.Timeout, TimeoutError)):
            return f"no answer within {timeout:g} s"
    return "connection failed"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and urllib3's ``reason`` links, without cycles."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        links = [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args]
        todo += [link for link in links if isinstance(link, BaseException)]


def _vault_text(error: hvac_errors.VaultError) -> str:
    errors = getattr(error, "errors", None) or []
    text = "; ".join(str(e).strip() for e in errors) if isinstance(errors, list) else str(errors)
    return " ".join((text or type(error).__name__).split())


def _log_fields(lease: Lease) -> dict[str, Any]:
    return {"run_id": lease.run_id, "call_id": lease.call_id, **lease.audit()}
