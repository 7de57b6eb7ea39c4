"""Durable records of a deployment, behind small async interfaces, in two storage modes.

* **Embedded** (default): one SQLite file under ``OPSBOT_DATA_DIR`` (``sqlite.py``), one process.
* **Scale-out** (``OPSBOT_DATABASE_URL=postgresql://…``): PostgreSQL tables through psycopg 3
  and a psycopg-pool (``postgres.py``), shared by any number of ingress and worker processes;
  ``opsbot db migrate`` (``migrations.py``) creates and upgrades the schema.

What is recorded (the same tables in both modes): ``runs`` (where a run lives, its state, its
status-message checklist), ``approvals`` (compare-and-set transitions), ``dedupe`` (delivery ids
already seen), ``audit`` (append-only, enforced by the database), ``executions`` (one row per
run + call: the execute guard that keeps a replayed ``execute`` from repeating a side effect),
``schedules`` (each schedule's last tick fired and last result),
``alert_groups`` (the run of each firing alert group, e.g. Alertmanager's ``groupKey``).

Hand-offs are transactions::

    async with records.transaction() as tx:       # a Records bound to one transaction
        if not await tx.dedupe.first_time(key):
            return
        await tx.runs.add(run)
        await tx.audit.record("task", run.run_id, user)
        await queue.defer(tx, job)                # commits with the rows, or not at all
"""

from graph.records.base import (
    AlertGroup,
    AlertGroups,
    AuditLog,
    Dedupe,
    Executions,
    Listings,
    Records,
    RunStore,
    ScheduleRow,
    ScheduleRows,
    TokenRows,
    Tx,
)

__all__ = ["AlertGroup", "AlertGroups", "AuditLog", "Dedupe", "Executions", "Listings", "Records",
           "RunStore", "ScheduleRow", "ScheduleRows", "TokenRows", "Tx"]
