"""The SQL behind the PostgreSQL connector's read-only actions, and how rows become text.

Every statement reads catalog views only (``pg_monitor`` is enough) and takes its limit as a
bound parameter. Kept apart from ``tools/postgres.py`` so the action declarations stay short.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_SINCE = "round(extract(epoch from now() - {col})::numeric, 1)"

ACTIVITY = f"""
select pid, usename as "user", application_name as app, client_addr::text as client, state,
       wait_event_type || ':' || wait_event as waiting_on,
       {_SINCE.format(col="xact_start")} as xact_s,
       {_SINCE.format(col="query_start")} as query_s,
       left(regexp_replace(query, '\\s+', ' ', 'g'), 200) as query
from pg_stat_activity
where backend_type = 'client backend' and pid <> pg_backend_pid()
order by case when state like 'idle in transaction%%' then 0 when state = 'active' then 1
              else 2 end,
         coalesce(xact_start, query_start) asc nulls last
limit %s
"""

LOCKS = f"""
select waiting.pid as blocked_pid, waiting.usename as blocked_user,
       {_SINCE.format(col="waiting.query_start")} as waiting_s,
       left(regexp_replace(waiting.query, '\\s+', ' ', 'g'), 150) as blocked_query,
       blocker.pid as blocking_pid, blocker.usename as blocking_user,
       blocker.state as blocking_state,
       {_SINCE.format(col="coalesce(blocker.xact_start, blocker.query_start)")} as blocking_xact_s,
       left(regexp_replace(blocker.query, '\\s+', ' ', 'g'), 150) as blocking_query
from pg_stat_activity waiting
cross join lateral unnest(pg_blocking_pids(waiting.pid)) as blocking(pid)
join pg_stat_activity blocker on blocker.pid = blocking.pid
order by waiting.query_start asc
limit %s
"""

HAS_STATEMENTS = "select exists (select 1 from pg_extension where extname = 'pg_stat_statements')"

SLOW = """
select calls, round(total_exec_time::numeric, 1) as total_ms,
       round(mean_exec_time::numeric, 2) as mean_ms, rows,
       left(regexp_replace(query, '\\s+', ' ', 'g'), 200) as query
from pg_stat_statements
order by total_exec_time desc
limit %s
"""

SIZES = """
select n.nspname || '.' || c.relname as relation,
       case c.relkind when 'r' then 'table' when 'i' then 'index' when 'm' then 'matview'
                      when 'p' then 'partitioned' end as kind,
       pg_size_pretty(pg_total_relation_size(c.oid)) as size,
       pg_total_relation_size(c.oid) as bytes
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'i', 'm', 'p')
  and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
order by pg_total_relation_size(c.oid) desc
limit %s
"""

REPLICATION = """
select application_name as standby, client_addr::text as client, state, sync_state,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) as replay_lag_bytes,
       write_lag::text, flush_lag::text, replay_lag::text
from pg_stat_replication
order by pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) desc nulls first
"""

STANDBY = """
select pg_last_wal_receive_lsn()::text as received_lsn,
       pg_last_wal_replay_lsn()::text as replayed_lsn,
       (now() - pg_last_xact_replay_timestamp())::text as replay_delay
"""

BACKEND = f"""
select pid, usename as "user", datname as database, application_name as app,
       client_addr::text as client, state, {_SINCE.format(col="xact_start")} as xact_s,
       {_SINCE.format(col="query_start")} as query_s,
       wait_event_type || ':' || wait_event as waiting_on, query
from pg_stat_activity where pid = %s
"""


def render_rows(names: Sequence[str], rows: Sequence[Sequence[Any]], max_cell: int) -> str:
    """An aligned text table, one line per row; cells on one line, clipped to ``max_cell``."""
    cells = [[_cell(v, max_cell) for v in row] for row in rows]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in cells]
    return "\n".join(lines)


def _cell(value: Any, limit: int) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def chains(pairs: Sequence[tuple[int, int]]) -> list[str]:
    """Blocking chains from (blocked, blocking) pid pairs, each from a root blocker (one that
    waits on nobody): ``"101 blocks 202 blocks 303"``."""
    blocks: dict[int, list[int]] = {}
    for blocked, blocking in pairs:
        blocks.setdefault(blocking, []).append(blocked)
    waiting = {blocked for blocked, _ in pairs}
    roots = [pid for pid in blocks if pid not in waiting] or sorted(blocks)[:1]
    found: list[str] = []
    for root in sorted(roots):
        _walk(root, blocks, [root], found)
    return found


def _walk(pid: int, blocks: dict[int, list[int]], path: list[int], found: list[str]) -> None:
    children = [c for c in blocks.get(pid, []) if c not in path]
    if not children:
        found.append(" blocks ".join(str(p) for p in path))
    for child in sorted(children):
        _walk(child, blocks, [*path, child], found)
