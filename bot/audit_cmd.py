"""``opsbot audit``: a run's whole story from the append-only audit log (either mode)."""

from __future__ import annotations

import asyncio
import json

from bot.settings import Settings
from graph.records.base import REFUSALS

FIELDS = ("verdict", "tier", "rule", "reason", "status", "by", "approve", "action", "hash",
          "accessor", "container", "exit_code", "duration_s", "network", "error", "headline",
          "text", "source", "approval", "expires_at", "timed_out", "state")


def show(settings: Settings, run_id: str | None, as_json: bool = False,
         refused: bool = False) -> int:
    if not settings.scale_out and not (settings.data_dir / "opsbot.sqlite").exists():
        print(f"opsbot: no audit log at {settings.data_dir / 'opsbot.sqlite'} (set OPSBOT_DATA_DIR)")
        return 1
    return asyncio.run(_show(settings, run_id, as_json, refused))


async def _show(settings: Settings, run_id: str | None, as_json: bool, refused: bool) -> int:
    from bot.wiring import open_records

    records = await open_records(settings)
    try:
        if refused:
            rows = await records.audit.rows(REFUSALS, run_id)
            print(json.dumps(rows, indent=2, default=str) if as_json else _refusals(rows))
            return 0
        if run_id is None:
            rows = await records.audit.runs()
            print(json.dumps(rows, indent=2) if as_json else _runs_table(rows))
            return 0
        story = await records.audit.story(run_id)
    finally:
        await records.close()
    if not story:
        print(f"opsbot: no audit rows for run {run_id}")
        return 1
    print(json.dumps(story, indent=2, default=str) if as_json else _story(story))
    return 0


def _refusals(rows: list[dict]) -> str:
    if not rows:
        return "no refusals recorded"
    return "\n".join(f"{r['run_id'] or '-':<12}" + _line(r) for r in reversed(rows))


def _runs_table(rows: list[dict]) -> str:
    if not rows:
        return "no runs recorded yet"
    return "\n".join(f"{r['run_id']}  {r['started']}  {r['rows']} rows" for r in rows)


def _story(rows: list[dict]) -> str:
    return "\n".join(_line(r) for r in rows)


def _line(row: dict) -> str:
    data = row["data"]
    bits = []
    for key in FIELDS:
        if key in data and data[key] not in (None, "", [], {}):
            value = data[key]
            if isinstance(value, (dict, list)):
                value = json.dumps(value, sort_keys=True)
            bits.append(f"{key}={value}")
    actor = f" by {row['actor']}" if row["actor"] else ""
    return f"{row['ts'][:19]}  {row['kind']:<18}{actor}  " + "  ".join(bits)
