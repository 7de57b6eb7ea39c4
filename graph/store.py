"""Durable records of runs and of deliveries already seen (SQLite via sqlite-utils).

One database file under ``OPSBOT_DATA_DIR`` holds runs, dedupe keys, approvals and the audit
log; the LangGraph checkpointer keeps its own file beside it.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from graph.surface import RunRef, RunState

DEDUPE_WINDOW_S = 6 * 3600  # Slack retries for ~5 minutes, PagerDuty for ~20; keep hours


def open_db(path: Path) -> sqlite_utils.Database:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
    conn.execute("pragma journal_mode=wal")
    conn.execute("pragma synchronous=normal")
    conn.execute("pragma busy_timeout=10000")
    return sqlite_utils.Database(conn)


class Dedupe:
    """Remembers delivery ids (Slack ``event_id``, PagerDuty ``X-Webhook-Id``) across restarts."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db
        db.execute("create table if not exists dedupe (key text primary key, seen_at real)")

    def first_time(self, key: str) -> bool:
        """True exactly once per key within the window (atomic insert)."""
        now = time.time()
        cursor = self.db.execute(
            "insert or ignore into dedupe (key, seen_at) values (?, ?)", [key, now]
        )
        return cursor.rowcount == 1

    def prune(self) -> int:
        cutoff = time.time() - DEDUPE_WINDOW_S
        return self.db.execute("delete from dedupe where seen_at < ?", [cutoff]).rowcount


class RunStore:
    """One row per run: where it lives in Slack and what state it is in."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db
        if "runs" not in db.table_names():
            db["runs"].create(
                {"id": str, "thread_id": str, "channel": str, "state": str, "ref": str,
                 "alert_id": str, "created_at": str, "updated_at": str},
                pk="id",
            )
            db["runs"].create_index(["channel", "state"])
            db["runs"].create_index(["thread_id"])
            db["runs"].create_index(["alert_id"])

    def add(self, run: RunRef, state: RunState = RunState.QUEUED) -> None:
        now = _now()
        self.db["runs"].insert(
            {"id": run.run_id, "thread_id": run.thread_id, "channel": run.task.channel,
             "state": state.value, "ref": run.model_dump_json(),
             "alert_id": run.task.alert.id if run.task.alert else None,
             "created_at": now, "updated_at": now},
        )

    def save(self, run: RunRef) -> None:
        self.db["runs"].update(
            run.run_id, {"ref": run.model_dump_json(), "thread_id": run.thread_id,
                         "updated_at": _now()},
        )

    def set_state(self, run_id: str, state: RunState) -> None:
        self.db["runs"].update(run_id, {"state": state.value, "updated_at": _now()})

    def get(self, run_id: str) -> tuple[RunRef, RunState] | None:
        rows = list(self.db.query("select ref, state from runs where id = ?", [run_id]))
        return (RunRef.model_validate_json(rows[0]["ref"]), RunState(rows[0]["state"])) if rows else None

    def in_states(self, *states: RunState, channel: str | None = None,
                  thread_id: str | None = None) -> list[tuple[RunRef, RunState]]:
        marks = ",".join("?" for _ in states)
        sql = f"select ref, state from runs where state in ({marks})"
        args: list[str] = [s.value for s in states]
        for column, value in (("channel", channel), ("thread_id", thread_id)):
            if value:
                sql += f" and {column} = ?"
                args.append(value)
        rows = self.db.query(sql + " order by created_at", args)
        return [(RunRef.model_validate_json(r["ref"]), RunState(r["state"])) for r in rows]

    def latest_in_thread(self, thread_id: str) -> tuple[RunRef, RunState] | None:
        rows = list(self.db.query(
            "select ref, state from runs where thread_id = ? order by created_at desc limit 1",
            [thread_id],
        ))
        return (RunRef.model_validate_json(rows[0]["ref"]), RunState(rows[0]["state"])) if rows else None

    def for_alert(self, alert_id: str) -> tuple[RunRef, RunState] | None:
        rows = list(self.db.query(
            "select ref, state from runs where alert_id = ? order by created_at limit 1", [alert_id]
        ))
        return (RunRef.model_validate_json(rows[0]["ref"]), RunState(rows[0]["state"])) if rows else None


def _now() -> str:
    return datetime.now(UTC).isoformat()
