"""Credential leases a crashed opsbot left open, revoked when the next one starts.

Every lease is an audit row (``credential.lease``) and every revocation another
(``credential.revoke``, with ``revoked_at`` once it succeeded). A lease with the first and not
the second belongs to an action that never finished: opsbot was killed mid-action, or Vault
was down when it tried to revoke. At start, before any new run, the broker revokes those of
its own instance (another instance's leases may belong to actions still running there).
Vault would end them anyway when their token's TTL (the action's timeout plus a margin) runs
out; this ends them now.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

from graph.audit import AuditLog

log = structlog.get_logger("opsbot.leases")
HORIZON = timedelta(days=1)  # older leases died at their TTL long ago


class Revoker(Protocol):
    instance: str

    async def revoke_open(self, rows: list[dict[str, Any]]) -> list[Any]: ...


async def revoke_orphaned(audit: AuditLog, broker: Revoker) -> int:
    """Revoke this instance's open leases; returns how many were revoked."""
    since = (datetime.now(UTC) - HORIZON).isoformat()
    leases = await broker.revoke_open(audit.open_leases(broker.instance, since))
    for lease in leases:
        audit.record("credential.revoke", lease.run_id, call_id=lease.call_id, orphaned=True,
                     **lease.audit())
    revoked = sum(1 for lease in leases if lease.revoked_at is not None)
    if leases:
        log.warning("credentials.orphans_revoked", found=len(leases), revoked=revoked)
    return revoked
