"""``opsbot feedback [--since 7d]``: the runs people rated, worst first, with their comments.

``--since`` takes a span back from now (``12h``, ``7d``, ``2w``) or a date (``2026-12-01``);
without it, every rating. Works in both storage modes (it reads ``records.feedback``).
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta

from bot.errors import ConfigError
from bot.settings import Settings
from graph.feedback import RunFeedback, worst_first

SPAN = re.compile(r"^(\d+)([hdw])$")
UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
NONE = "No feedback{since} yet."


def parse_since(text: str | None, now: datetime) -> datetime | None:
    if not text:
        return None
    found = SPAN.match(text.strip())
    if found:
        return now - int(found.group(1)) * UNITS[found.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--since: {text!r} is neither a span (12h, 7d, 2w) nor a date "
                          "(2026-12-01).") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def show(settings: Settings, since: str | None, as_json: bool = False) -> int:
    start = parse_since(since, datetime.now(UTC))
    return asyncio.run(_show(settings, start, since, as_json))


async def _show(settings: Settings, start: datetime | None, since: str | None,
                as_json: bool) -> int:
    from bot.wiring import open_records

    records = await open_records(settings)
    try:
        ranked = worst_first(await records.feedback.since(start))
        about = {r.run_id: await records.runs.row(r.run_id) for r in ranked}
    finally:
        await records.close()
    if as_json:
        print(json.dumps([_json(r, about[r.run_id]) for r in ranked], indent=2))
    else:
        print("\n".join(_lines(r, about[r.run_id]) for r in ranked)
              or NONE.format(since=f" since {since}" if since else ""))
    return 0


def _asked(row) -> tuple[str, str]:
    if row is None:
        return "", ""
    task = row.run.task
    return task.channel, (task.alert.title if task.alert else task.text)[:80]


def _lines(run: RunFeedback, row) -> str:
    channel, asked = _asked(row)
    head = f"{run.run_id}  👎 {run.down}  👍 {run.up}  {channel}  {asked!r}"
    notes = [f"    {user} {'👍' if rating == 'up' else '👎'} {text}"
             for user, rating, text in run.comments]
    return "\n".join([head, *notes])


def _json(run: RunFeedback, row) -> dict:
    channel, asked = _asked(row)
    return {"run_id": run.run_id, "down": run.down, "up": run.up, "channel": channel,
            "asked": asked, "comments": [{"user": u, "rating": r, "text": t}
                                         for u, r, t in run.comments]}
