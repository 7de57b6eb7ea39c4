"""Credential leases a crashed opsbot left open, revoked when the next one starts.

Every lease is an audit row (``credential.lease``) and every revocation another
(``credential.revoke``, with ``revoked_at`` once it succeeded). A lease with the first and not
the second belongs to an action that never finished: opsbot was killed mid-action, or Vault
was down when it tried to revoke. At start, before any new run, the broker revokes those of
instances that lived on this host and have died (a live sibling's leases belong to actions
still running there; another host's dead instances are revoked by that host, or by their TTL).
Vault would end them anyway when their token's TTL (the action's timeout plus a margin) runs
out; this ends them now.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

from graph.records import AuditLog

log = structlog.get_logger("opsbot.leases")
HORIZON = timedelta(days=1)  # older leases died at their TTL long ago


class Revoker(Protocol):
    instance: str

    async def revoke_open(self, rows: list[dict[str, Any]]) -> list[Any]: ...


async def revoke_orphaned(audit: AuditLog, broker: Revoker, dead: Callable[[str], bool]) -> int:
    """Revoke the open leases of dead instances (``dead(instance)``); returns how many."""
    since = datetime.now(UTC) - HORIZON
    rows = [r for r in await audit.open_leases(since) if dead(r["data"].get("instance", ""))]
    leases = await broker.revoke_open(rows)
    for lease in leases:
        await audit.record("credential.revoke", lease.run_id, call_id=lease.call_id,
                           orphaned=True, **lease.audit())
    revoked = sum(1 for lease in leases if lease.revoked_at is not None)
    if leases:
        log.warning("credentials.orphans_revoked", found=len(leases), revoked=revoked)
    return revoked
