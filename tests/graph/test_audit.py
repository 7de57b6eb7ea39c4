"""The audit log is append-only and never stores a registered secret."""

import sqlite3

import pytest

from graph.audit import AuditLog
from graph.store import open_db
from tools.secrets import Redactor


def test_rows_are_append_only_and_redacted(tmp_path):
    redactor = Redactor()
    redactor.add("canary-s3cret-value")
    audit = AuditLog(open_db(tmp_path / "a.sqlite"), redactor)
    audit.record("task", "r-1", "U1", text="flush with canary-s3cret-value please", n=1)
    audit.record("report", "r-1", state="done")
    audit.record("task", "r-2", "U2", text="other run")
    story = audit.story("r-1")
    assert [r["kind"] for r in story] == ["task", "report"]
    assert story[0]["data"] == {"n": 1, "text": "flush with [redacted] please"}
    raw = sqlite3.connect(tmp_path / "a.sqlite")
    for path in tmp_path.iterdir():  # the database and its WAL
        assert b"canary" not in path.read_bytes()
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("update audit set kind = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("delete from audit")
    assert {r["run_id"]: r["rows"] for r in audit.runs()} == {"r-1": 2, "r-2": 1}
