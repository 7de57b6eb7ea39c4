"""The small interface every credential kind implements, and what it hands back.

A kind turns one :class:`Need` (the refs of an action that share kind, path and params) into
values for the action plus a :class:`Grant`: what the audit log records and what ``revoke``
needs later, possibly in another process after a crash (so a grant holds identifiers only,
never a secret). The broker does the rest: one throwaway policy and one child token per action
for every kind that reads Vault (``policy`` says what the kind needs that token to do), the
redactor, the audit shape, orphans.

Adding a kind (AWS STS, GitHub App tokens ...) means one module with a class like
:class:`sandbox.credentials.database.Database`, a :class:`tools.base.SecretKind` member, and an
entry in ``CredentialBroker``'s kinds. Usage::

    class Database:
        kind = SecretKind.DATABASE
        uses_vault, leased, dynamic = True, True, True
        public = frozenset({"username"})
        def validate(self, ref): ...                       # raise VaultError, before any call
        def policy(self, need): return 'path "..." {...}'  # what the child token may do
        def issue(self, ctx, need): return values, grant   # in a worker thread
        def revoke(self, vault, grant): ...                # parent token; idempotent
"""

from __future__ import annotations

import re
import secrets as _random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import hvac

from sandbox.credentials.vault import NOT_RUN, Vault, VaultError
from tools.base import ROLE_PATH, SecretKind, SecretRef


def now() -> datetime:
    return datetime.now(UTC)


def check_role(ref: SecretRef, verb: str, what: str, keys: tuple[str, ...]) -> None:
    """A role path ``<mount>/<verb>/<role>`` (plain segments: no glob may widen the grant) and a
    key among ``keys``; ``what`` names the credential in the sentence."""
    if not re.fullmatch(ROLE_PATH.format(verb=verb), ref.path):
        raise VaultError(f"`{ref.path}` is not {what} role path like {ref.kind}/{verb}/<role>; "
                         f"{NOT_RUN}")
    if ref.key not in keys:
        raise VaultError(f"{what} credential has {' and '.join(keys)}, not `{ref.key}`; "
                         f"{NOT_RUN}")


def stanza(path: str, *capabilities: str) -> str:
    """One path of the action's policy."""
    listed = ", ".join(f'"{c}"' for c in capabilities)
    return f'path "{path}" {{\n  capabilities = [{listed}]\n}}\n'


POLICY_PREFIX = "opsbot-action-"  # the parent token may write and delete these policies only
_SLUG = re.compile(r"[^a-z0-9]+")


def policy_name(run_id: str, call_id: str) -> str:
    """A fresh name for one action's throwaway Vault policy."""
    slug = "-".join(_SLUG.sub("-", s.lower()).strip("-")[:40] for s in (run_id, call_id))
    return f"{POLICY_PREFIX}{slug}-{_random.token_hex(4)}"


@dataclass(frozen=True)
class Need:
    """Refs served by one issue: same kind, path and engine params; ``keys`` maps each ref's
    name to the field it takes from what was issued."""

    kind: SecretKind
    path: str
    params: tuple[tuple[str, str], ...]
    keys: Mapping[str, str]

    def param(self, name: str) -> str | None:
        return dict(self.params).get(name)


@dataclass
class Grant:
    """One credential issued for an action, as the audit log sees it (no secret in here).

    ``lease_id`` is the Vault lease to revoke (dynamic secrets); ``ttl_s`` how long the
    credential lives if nobody revokes it; ``facts`` what else is worth recording (the database
    user's name, the SSH certificate's serial and principal).
    """

    kind: str
    path: str
    lease_id: str | None = None
    ttl_s: int = 0
    revocable: bool = True
    facts: dict[str, Any] = field(default_factory=dict)
    revoked_at: datetime | None = None

    def audit(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "path": self.path, "lease_id": self.lease_id,
                "ttl_s": self.ttl_s, "revocable": self.revocable, **self.facts,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}

    @classmethod
    def from_audit(cls, data: Mapping[str, Any]) -> Grant:
        known = {"kind", "path", "lease_id", "ttl_s", "revocable", "revoked_at"}
        return cls(kind=data["kind"], path=data["path"], lease_id=data.get("lease_id"),
                   ttl_s=int(data.get("ttl_s") or 0), revocable=bool(data.get("revocable", True)),
                   facts={k: v for k, v in data.items() if k not in known})


@dataclass(frozen=True)
class IssueContext:
    """What a kind gets to issue with: the action's own client (its child token; None for
    kinds that don't read Vault), the TTL every credential must die by, and who it is for."""

    vault: Vault | None
    client: hvac.Client | None
    ttl_s: int
    run_id: str
    call_id: str


class Kind(Protocol):
    kind: SecretKind
    uses_vault: bool  # issued with the action's child token (and covered by its policy)
    # Kinds that call a service while issuing also set ``blocking = True``: the broker then
    # issues in a worker thread even when no kind of the action uses Vault.
    leased: bool  # Vault leases it to that token: the token must outlive its last use
    dynamic: bool  # a new value per action (redacted only while it may still be around)
    public: frozenset[str]  # keys whose values are not secret (a username): never redacted

    def validate(self, ref: SecretRef) -> None: ...

    def policy(self, need: Need) -> str: ...

    def issue(self, ctx: IssueContext, need: Need) -> tuple[dict[str, str], Grant]: ...

    def revoke(self, vault: Vault | None, grant: Grant) -> None: ...
