"""The append-only audit log: one row per thing that happened, joined by run id.

Rows are never updated or deleted (SQLite triggers refuse it). Every payload passes through the
redactor before it is written, so a secret value can't land here even by mistake.

Kinds: ``task``, ``policy``, ``approval.request``, ``approval.vote``, ``approval.decision``,
``credential.lease``, ``credential.revoke``, ``sandbox.exec``, ``report``, ``message``,
``run.state``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from tools.secrets import REDACTOR, Redactor

_SCHEMA = """
create table if not exists audit (
    id integer primary key autoincrement,
    ts text not null,
    run_id text,
    kind text not null,
    actor text,
    data text not null
);
create index if not exists audit_run on audit (run_id);
create trigger if not exists audit_no_update before update on audit
    begin select raise(abort, 'the audit log is append-only'); end;
create trigger if not exists audit_no_delete before delete on audit
    begin select raise(abort, 'the audit log is append-only'); end;
"""


class AuditLog:
    def __init__(self, db: sqlite_utils.Database, redactor: Redactor = REDACTOR):
        self.db = db
        self.redactor = redactor
        db.executescript(_SCHEMA)

    def record(self, kind: str, run_id: str | None, actor: str | None = None, **data: Any) -> None:
        body = json.dumps(self.redactor.redact_obj(data), default=str, sort_keys=True)
        self.db.execute(
            "insert into audit (ts, run_id, kind, actor, data) values (?, ?, ?, ?, ?)",
            [datetime.now(UTC).isoformat(), run_id, kind, actor, body],
        )

    def story(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.db.query(
            "select id, ts, run_id, kind, actor, data from audit where run_id = ? order by id",
            [run_id],
        )
        return [{**r, "data": json.loads(r["data"])} for r in rows]

    def open_leases(self, instance: str, since: str) -> list[dict[str, Any]]:
        """Credential leases this opsbot instance recorded since ``since`` (ISO time) with no
        successful revocation: what a crash left behind. ``[{"run_id", "call_id", "data"}]``."""
        rows = self.db.query(
            "select l.run_id, l.data from audit l where l.kind = 'credential.lease' "
            "and l.ts >= ? and json_extract(l.data, '$.instance') = ? and not exists ("
            "  select 1 from audit r where r.kind = 'credential.revoke' "
            "  and json_extract(r.data, '$.lease') = json_extract(l.data, '$.lease') "
            "  and json_extract(r.data, '$.revoked_at') is not null) order by l.id",
            [since, instance],
        )
        found = []
        for row in rows:
            data = json.loads(row["data"])
            found.append({"run_id": row["run_id"], "call_id": data.get("call_id"), "data": data})
        return found

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        return list(self.db.query(
            "select run_id, min(ts) as started, max(ts) as last, count(*) as rows from audit "
            "where run_id is not null group by run_id order by started desc limit ?",
            [limit],
        ))
