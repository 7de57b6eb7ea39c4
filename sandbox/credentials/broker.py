"""The credential broker: for each action, exactly what it declared, alive only while it runs.

opsbot holds one Vault token and never hands it to an action. For each action the broker
groups the declared refs into needs (:mod:`.kinds`), writes a throwaway ACL policy allowing
exactly what those needs require (read a KV path, read ``database/creds/<role>``, write
``ssh/sign/<role>``), mints a child token with that policy alone (TTL = action timeout +
margin, a use per need, not renewable), issues every need with it, registers every value with
:data:`tools.secrets.REDACTOR`, and returns a :class:`Lease`. ``revoke`` revokes the dynamic
leases (the database user is dropped before it returns), the token and the policy. Usage::

    broker = CredentialBroker(VaultConfig(addr=..., token=...), {"GITHUB_TOKEN": token})
    lease = await broker.mint(run_id, call.id, resolved.secrets, ttl_s=action.timeout)
    try:
        request.secrets = lease.values          # {SecretRef.name: SecretStr}
        ...
    finally:
        await broker.revoke(lease)              # idempotent; records Vault trouble, never raises
        await audit.record("credential.revoke", run_id, **lease.audit())

A lease's audit form holds identifiers only (lease id, accessor, Vault lease ids), enough for
``revoke`` to end it from another process: a restarted opsbot revokes what a crashed one left
(:meth:`CredentialBroker.revoke_open`). opsbot's own token needs :data:`PARENT_POLICY`
(``check`` verifies it at boot).
"""

from __future__ import annotations

import asyncio
import math
import secrets as _random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

import structlog
from pydantic import SecretStr

from sandbox import metrics
from sandbox.credentials.aws import AwsSession
from sandbox.credentials.database import Database
from sandbox.credentials.kinds import (
    Grant,
    IssueContext,
    Kind,
    Need,
    now,
    policy_name,
    stanza,
)
from sandbox.credentials.ssh import SSH
from sandbox.credentials.stored import KV, Static
from sandbox.credentials.vault import NOT_RUN, Vault, VaultConfig, VaultError
from sandbox.credentials.vault_token import VaultToken
from tools.base import SecretKind, SecretRef
from tools.secrets import REDACTOR

log = structlog.get_logger(__name__)

# sudo on auth/token/create lets a non-root token grant a policy it does not hold itself;
# sys/leases/revoke ends a dynamic database user at once (and a crashed run's at the next start).
PARENT_POLICY = """\
path "sys/policies/acl/opsbot-action-*" { capabilities = ["create", "update", "delete"] }
path "auth/token/create" { capabilities = ["update", "sudo"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
path "sys/leases/revoke/*" { capabilities = ["update"] }
"""
_REQUIRED = {
    "sys/policies/acl/opsbot-action-check": ("create", "update", "delete"),
    "auth/token/create": ("update", "sudo"),
    "auth/token/revoke-accessor": ("update",),
    "sys/leases/revoke/database/creds/check/x": ("update",),
}
_CHILD = {"no_default_policy": True, "renewable": False, "type": "service",
          "display_name": "opsbot-action"}


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
    grants: list[Grant] = field(default_factory=list)
    id: str = field(default_factory=lambda: f"l-{_random.token_hex(8)}")
    instance: str = ""
    policy: str | None = None
    accessor: str | None = None
    ttl_s: int = 0
    num_uses: int = 0
    created_at: datetime = field(default_factory=now)
    revoked_at: datetime | None = None
    revoke_error: str | None = None

    @property
    def policies(self) -> list[str]:
        return [self.policy] if self.policy else []

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(g.path for g in self.grants if g.kind == SecretKind.KV)

    @property
    def static(self) -> tuple[str, ...]:
        return tuple(g.facts["setting"] for g in self.grants if g.kind == SecretKind.STATIC)

    def audit(self) -> dict[str, Any]:
        """A JSON-ready description for the audit row: identifiers only, no token, no value.

        Leaves out run_id and call_id, which the audit row already carries.
        """
        return {
            "lease": self.id, "instance": self.instance, "accessor": self.accessor,
            "policies": self.policies, "paths": list(self.paths), "static": list(self.static),
            "names": list(self.names), "grants": [g.audit() for g in self.grants],
            "ttl_s": self.ttl_s, "num_uses": self.num_uses,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revoke_error": self.revoke_error,
        }

    @classmethod
    def from_audit(cls, run_id: str, call_id: str, data: Mapping[str, Any]) -> Lease:
        """The revocable part of a lease, rebuilt from its audit row (values are long gone)."""
        return cls(run_id, call_id, id=data["lease"], instance=data.get("instance", ""),
                   policy=next(iter(data.get("policies") or []), None),
                   accessor=data.get("accessor"), ttl_s=int(data.get("ttl_s") or 0),
                   grants=[Grant.from_audit(g) for g in data.get("grants") or []],
                   created_at=datetime.fromisoformat(data["created_at"]))


def plan(refs: list[SecretRef], kinds: Mapping[SecretKind, Kind]) -> list[Need]:
    """Group refs into needs (one issue each), refusing anything a kind would not serve."""
    groups: dict[tuple[SecretKind, str, tuple[tuple[str, str], ...]], dict[str, str]] = {}
    names: set[str] = set()
    for ref in refs:
        if ref.name in names:
            raise ValueError(f"two secrets are both named `{ref.name}`; names must be unique.")
        names.add(ref.name)
        kind = kinds.get(ref.kind)
        if kind is None:
            raise VaultError(f"opsbot cannot issue `{ref.kind}` credentials (secret "
                             f"`{ref.name}`); {NOT_RUN}")
        kind.validate(ref)
        groups.setdefault((ref.kind, ref.path, ref.params), {})[ref.name] = ref.key
    return [Need(kind, path, params, keys) for (kind, path, params), keys in groups.items()]


def policy_hcl(paths: tuple[str, ...]) -> str:
    """The per-action ACL for KV reads alone: read on each declared path, nothing else."""
    return "".join(stanza(p, "read") for p in paths)


def default_kinds(static: Mapping[str, SecretStr]) -> dict[SecretKind, Kind]:
    kinds: list[Kind] = [Static(static), KV(), Database(), SSH(), VaultToken(), AwsSession()]
    return {kind.kind: kind for kind in kinds}


class CredentialBroker:
    """Mints, issues and revokes per-action credentials. One per process; safe to share.

    ``instance`` tags every lease (the process's sandbox instance), so a restarted opsbot revokes
    only what dead instances left, never a live sibling's. ``kinds`` replaces the default set (static, kv, database, ssh).
    """

    def __init__(
        self, config: VaultConfig | None, static: Mapping[str, SecretStr] = MappingProxyType({}),
        instance: str = "", kinds: Mapping[SecretKind, Kind] | None = None,
    ) -> None:
        self._config = config
        self._vault = Vault(config) if config else None
        self._kinds = dict(kinds) if kinds is not None else default_kinds(static)
        self.instance = instance
        self._orphans: set[asyncio.Task[None]] = set()

    def register(self, kind: Kind) -> None:
        """Add (or replace) a credential kind once its service runs (the Docker proxy)."""
        self._kinds[kind.kind] = kind

    async def mint(
        self, run_id: str, call_id: str, secrets: list[SecretRef], ttl_s: float
    ) -> Lease:
        """Issue every declared secret or raise :class:`VaultError`; all or nothing."""
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be positive seconds, got {ttl_s!r}.")
        needs = plan(secrets, self._kinds)
        lease = Lease(run_id, call_id, names=tuple(r.name for r in secrets),
                      instance=self.instance)
        try:
            if any(self._kinds[n.kind].uses_vault for n in needs):
                ttl = math.ceil(ttl_s + self._require_vault().config.ttl_margin_s)
                values = await self._issue_in_thread(lease, needs, ttl)
            elif any(getattr(self._kinds[n.kind], "blocking", False) for n in needs):
                values = await self._issue_in_thread(lease, needs, math.ceil(ttl_s))
            else:
                values = self._issue(lease, needs, math.ceil(ttl_s))
        except VaultError:
            metrics.FAILURES.labels("mint").inc()
            raise
        metrics.counted(metrics.MINTED, (str(n.kind) for n in needs))
        lease.values.update({name: SecretStr(v) for name, v in values.items()})
        log.info("vault.lease.minted", **_log_fields(lease))
        return lease

    async def revoke(self, lease: Lease) -> None:
        """Revoke dynamic leases, the token, the policy. Idempotent, fine on a half-built lease.

        Vault trouble lands in ``lease.revoke_error`` (and a warning) instead of an exception,
        so a ``finally`` never masks the action's own outcome; everything still dies at its TTL.
        """
        if lease.revoked_at is not None:
            return
        for value in lease.values.values():  # the action is over either way
            REDACTOR.release(value.get_secret_value())
        lease.values.clear()
        if lease.accessor or lease.policy or _to_revoke(lease):
            await asyncio.to_thread(self._revoke, lease)
        else:
            lease.revoked_at = now()
        if lease.revoked_at is not None:
            log.info("vault.lease.revoked", **_log_fields(lease))
            metrics.counted(metrics.REVOKED, (g.kind for g in lease.grants))
        else:
            metrics.FAILURES.labels("revoke").inc()

    async def revoke_open(self, rows: list[dict[str, Any]]) -> list[Lease]:
        """Revoke leases a crashed opsbot left (audit rows with no revocation, of instances the
        caller judged dead: ``graph/leases.py``).

        ``rows`` are ``{"run_id", "call_id", "data": Lease.audit()}``; returns the leases,
        revoked or with ``revoke_error`` set, for the caller to audit.
        """
        leases = [Lease.from_audit(r["run_id"], r["call_id"], r["data"]) for r in rows]
        for lease in leases:
            await self.revoke(lease)
        return leases

    async def check(self) -> None:
        """Boot check: Vault reachable and unsealed, VAULT_TOKEN valid and allowed its job.

        Without a config there is nothing to check (static secrets only).
        """
        if self._vault is not None:
            await asyncio.to_thread(self._check, self._vault)

    def _require_vault(self) -> Vault:
        if self._vault is None:
            raise VaultError(
                "this action needs secrets from Vault, but VAULT_ADDR and VAULT_TOKEN are not "
                "set; set both and restart opsbot. The action did not run."
            )
        return self._vault

    async def _issue_in_thread(self, lease: Lease, needs: list[Need], ttl: int) -> Any:
        """Run ``_issue`` in a worker thread; if we are cancelled, revoke once it finishes."""
        task = asyncio.ensure_future(asyncio.to_thread(self._issue, lease, needs, ttl))
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

    # --- synchronous conversations, each run in one worker thread ---

    def _issue(self, lease: Lease, needs: list[Need], ttl: int) -> dict[str, str]:
        client = None
        try:
            if any(self._kinds[n.kind].uses_vault for n in needs):
                client = self._require_vault().client(self._create_token(lease, needs, ttl))
            ctx = IssueContext(self._vault, client, ttl, lease.run_id, lease.call_id)
            return self._issue_all(lease, needs, ctx)
        except BaseException:
            self._revoke(lease)
            raise
        finally:
            if client is not None:
                client.adapter.close()

    def _issue_all(self, lease: Lease, needs: list[Need], ctx: IssueContext) -> dict[str, str]:
        values: dict[str, str] = {}
        for need in needs:
            kind = self._kinds[need.kind]
            issued, grant = kind.issue(ctx, need)
            lease.grants.append(grant)
            for name, value in issued.items():
                if need.keys[name] not in kind.public:
                    REDACTOR.add(value, transient=kind.dynamic)
            values.update(issued)
        return values

    def _create_token(self, lease: Lease, needs: list[Need], ttl: int) -> str:
        """Write the per-action policy, mint the child token and return it (kept nowhere)."""
        vault = self._require_vault()
        vault_needs = [n for n in needs if self._kinds[n.kind].uses_vault]
        kinds = [self._kinds[n.kind] for n in vault_needs]
        hcl = "".join(kind.policy(n) for kind, n in zip(kinds, vault_needs, strict=True))
        # A leased credential dies with the use that exhausts its token: keep one use spare.
        uses = len(kinds) + (1 if any(k.leased for k in kinds) else 0)
        parent = vault.parent()
        lease.policy = policy_name(lease.run_id, lease.call_id)
        with vault.translate("write the action's policy"):
            parent.sys.create_or_update_acl_policy(lease.policy, hcl)
        meta = {"run_id": lease.run_id, "call_id": lease.call_id}
        with vault.translate("mint the action's token"):
            auth = parent.auth.token.create(
                policies=[lease.policy], ttl=f"{ttl}s", explicit_max_ttl=f"{ttl}s",
                num_uses=uses, meta=meta, **_CHILD,
            )["auth"]
        lease.accessor = auth["accessor"]
        lease.ttl_s = int(auth.get("lease_duration", ttl))
        lease.num_uses = int(auth.get("num_uses", uses))
        lease.created_at = now()
        return auth["client_token"]

    def _revoke(self, lease: Lease) -> None:
        """Dynamic leases first (synchronously), then the token, then its policy."""
        problems = [p for g in _to_revoke(lease) if (p := self._revoke_grant(g))]
        problems += self._revoke_token(lease)
        lease.revoke_error = " ".join(dict.fromkeys(problems)) or None  # one sentence per cause
        if problems:
            log.warning("vault.lease.revoke_failed", **_log_fields(lease))
        else:
            lease.revoked_at = now()

    def _revoke_grant(self, grant: Grant) -> str | None:
        kind = self._kinds.get(grant.kind)  # type: ignore[call-overload]
        if kind is None or (kind.uses_vault and self._vault is None):
            return (f"opsbot cannot revoke {grant.kind} lease {grant.lease_id} now; it ends at "
                    "its TTL.")
        try:
            kind.revoke(self._vault, grant)
        except VaultError as e:
            return str(e)
        grant.revoked_at = now()
        return None

    def _revoke_token(self, lease: Lease) -> list[str]:
        if not (lease.accessor or lease.policy):
            return []
        if self._vault is None:
            return [f"VAULT_ADDR is not set, so token {lease.accessor} lives until its TTL."]
        vault = self._vault
        parent = vault.parent()
        steps = [
            ("revoke the action's token", parent.auth.token.revoke_accessor, lease.accessor),
            ("delete the action's policy", parent.sys.delete_acl_policy, lease.policy),
        ]
        tail = f"token {lease.accessor} still expires at its TTL."
        problems = []
        for doing, call, arg in steps:
            try:
                if arg:
                    with vault.translate(doing, tail=tail):
                        call(arg)
            except VaultError as e:
                problems.append(str(e))
        return problems

    def _check(self, vault: Vault) -> None:
        with vault.translate("check VAULT_TOKEN", tail="opsbot cannot mint credentials."):
            caps = vault.parent().adapter.post(
                "/v1/sys/capabilities-self", json={"paths": list(_REQUIRED)}
            )["data"]
        for path, needed in _REQUIRED.items():
            held = set(caps.get(path, []))
            missing = [] if "root" in held else [c for c in needed if c not in held]
            if missing:
                raise VaultError(
                    f"VAULT_TOKEN lacks `{'`, `'.join(missing)}` on {path}; grant it the policy "
                    "in sandbox.credentials.PARENT_POLICY so opsbot can mint per-action "
                    "credentials."
                )


def _to_revoke(lease: Lease) -> list[Grant]:
    return [g for g in lease.grants if g.revocable and g.lease_id and g.revoked_at is None]


def _log_fields(lease: Lease) -> dict[str, Any]:
    return {"run_id": lease.run_id, "call_id": lease.call_id, **lease.audit()}
