"""Redis connector: look at a Redis server, and (behind approval) change it.

Read-only actions (tier 0): ``info``, ``slowlog``, ``get``, ``scan``, ``exists``. Changes: ``del``
(tier 3; checked afterwards with ``exists``), ``flushdb`` and ``flushall`` (tier 4). The server comes from ``REDIS_URL``. Credentials, best
first: an ACL user that Vault's database engine creates for the action and drops afterwards
(``OPSBOT_REDIS_READ_ROLE`` for tier 0-1 actions, ``OPSBOT_REDIS_WRITE_ROLE`` for changes); or a
static password read from Vault for the action (``OPSBOT_REDIS_PASSWORD_SECRET``); never held by
opsbot.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tools.base import (
    Action,
    ActionContext,
    Check,
    Endpoint,
    SecretRef,
    Status,
    Target,
    Tier,
    ToolResult,
    Toolset,
)
from tools.logins import Login

MAX_VALUE_CHARS = 20_000
MAX_KEY_CHARS = 512  # a key an approver can read on a card, whole


class RedisConfig(Login):
    """Where the Redis server is, and how an action logs in (:class:`tools.logins.Login`)."""

    model_config = ConfigDict(frozen=True)

    url: str = "redis://127.0.0.1:6379/0"

    @field_validator("url")
    @classmethod
    def _passwordless_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError("must start with redis:// or rediss://")
        if parts.password:
            raise ValueError(
                "must not contain a password; store it in Vault and set "
                "OPSBOT_REDIS_PASSWORD_SECRET=kv/data/<path>#<key>"
            )
        if not parts.hostname:
            raise ValueError("must name a host, e.g. redis://127.0.0.1:6379/0")
        return url

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 6379

    @property
    def db(self) -> int:
        path = urlsplit(self.url).path.strip("/")
        return int(path) if path.isdigit() else 0

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "rediss"


class _Db(BaseModel):
    model_config = ConfigDict(extra="forbid")

    db: int | None = Field(None, ge=0, le=15,
                           description="Database number; default from REDIS_URL.")


class InfoParams(_Db):
    section: str | None = Field(
        None,
        pattern=r"^[a-z_]{1,32}$",
        description="INFO section, e.g. memory, clients, stats, replication, keyspace.",
    )


class SlowlogParams(_Db):
    count: int = Field(10, ge=1, le=128, description="How many slow log entries to return.")


class GetParams(_Db):
    key: str = Field(..., min_length=1, max_length=MAX_KEY_CHARS, description="The key to read.")


class ScanParams(_Db):
    match: str = Field("*", min_length=1, max_length=256, description="Glob pattern for keys.")
    limit: int = Field(100, ge=1, le=1000, description="Stop after this many keys.")


class _Keys(_Db):
    keys: list[Annotated[str, Field(min_length=1, max_length=MAX_KEY_CHARS)]] = Field(
        ..., min_length=1, max_length=100, description="Exact key names (no globs)."
    )

    @field_validator("keys", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return [k for k in value.split(",") if k] if isinstance(value, str) else value


class DelParams(_Keys):
    pass


class ExistsParams(_Keys):
    pass


class FlushParams(_Db):
    pass


def _client(params: _Db, ctx: ActionContext):  # -> redis.Redis
    import redis

    config = RedisConfig.model_validate(ctx.config)
    host, port = ctx.address(config.host, config.port)
    return redis.Redis(
        host=host,
        port=port,
        db=_db(params, config),
        username=ctx.secrets.get("redis_username"),
        password=ctx.secrets.get("redis_password"),
        ssl=config.tls,
        socket_timeout=10,
        socket_connect_timeout=5,
        decode_responses=True,
    )


def _db(params: _Db, config: RedisConfig) -> int:
    return config.db if params.db is None else params.db


def _guard(invocation: str, fn, params: _Db, ctx: ActionContext) -> ToolResult:
    import redis

    try:
        return fn(_client(params, ctx))
    except redis.RedisError as e:
        return ToolResult.fail(invocation, f"{type(e).__name__}: {e}")


def _info(p: InfoParams, ctx: ActionContext) -> ToolResult:
    inv = f"INFO {p.section}" if p.section else "INFO"

    def go(r) -> ToolResult:
        raw = r.execute_command(inv)
        text = raw if isinstance(raw, str) else "\n".join(f"{k}:{v}" for k, v in raw.items())
        return ToolResult.ok(inv, text.strip())

    return _guard(inv, go, p, ctx)


def _slowlog(p: SlowlogParams, ctx: ActionContext) -> ToolResult:
    inv = f"SLOWLOG GET {p.count}"

    def go(r) -> ToolResult:
        entries = r.slowlog_get(p.count)
        rows = [
            {
                "id": e["id"],
                "start": e["start_time"],
                "us": e["duration"],
                "cmd": str(e["command"])[:200],
            }
            for e in entries
        ]
        if not rows:
            return ToolResult.no_data(inv, "The slow log is empty.")
        lines = [f"#{r['id']} {r['us']} µs  {r['cmd']}" for r in rows]
        return ToolResult.ok(inv, "\n".join(lines), rows)

    return _guard(inv, go, p, ctx)


def _get(p: GetParams, ctx: ActionContext) -> ToolResult:
    inv = f"GET {p.key}"

    def go(r) -> ToolResult:
        kind = r.type(p.key)
        if kind == "none":
            return ToolResult.no_data(inv, f"No key `{p.key}`.")
        if kind != "string":
            return ToolResult.fail(inv, f"`{p.key}` holds a {kind}, not a string.")
        value = r.get(p.key) or ""
        shown = value[:MAX_VALUE_CHARS]
        note = f"\n… ({len(value) - MAX_VALUE_CHARS} more characters)" if shown != value else ""
        return ToolResult.ok(inv, shown + note)

    return _guard(inv, go, p, ctx)


def _scan(p: ScanParams, ctx: ActionContext) -> ToolResult:
    inv = f"SCAN MATCH {p.match} (up to {p.limit})"

    def go(r) -> ToolResult:
        keys: list[str] = []
        for key in r.scan_iter(match=p.match, count=500):
            keys.append(key)
            if len(keys) >= p.limit:
                break
        if not keys:
            return ToolResult.no_data(inv, "No matching keys.")
        more = " (limit reached)" if len(keys) >= p.limit else ""
        keys.sort()
        return ToolResult.ok(inv, f"{len(keys)} keys{more}:\n" + "\n".join(keys), keys)

    return _guard(inv, go, p, ctx)


def _del(p: DelParams, ctx: ActionContext) -> ToolResult:
    inv = "DEL " + " ".join(p.keys)

    def go(r) -> ToolResult:
        n = r.delete(*p.keys)
        return ToolResult.ok(inv, f"Deleted {n} of {len(p.keys)} keys.", {"deleted": n})

    return _guard(inv, go, p, ctx)


def _exists(p: ExistsParams, ctx: ActionContext) -> ToolResult:
    inv = "EXISTS " + " ".join(p.keys)

    def go(r) -> ToolResult:
        present = [key for key in p.keys if r.exists(key)]
        listed = f": {', '.join(present)}" if present else ""
        return ToolResult.ok(inv, f"{len(present)} of {len(p.keys)} keys exist{listed}.",
                             {"exists": len(present), "present": present})

    return _guard(inv, go, p, ctx)


def _keys_gone(result: ToolResult) -> bool:
    return result.status is Status.OK and (result.data or {}).get("exists") == 0


def _flushdb(p: FlushParams, ctx: ActionContext) -> ToolResult:
    inv = "FLUSHDB"

    def go(r) -> ToolResult:
        before = r.dbsize()
        r.flushdb()
        return ToolResult.ok(inv, f"Flushed the database ({before} keys removed).",
                             {"removed": before})

    return _guard(inv, go, p, ctx)


def _flushall(p: FlushParams, ctx: ActionContext) -> ToolResult:
    inv = "FLUSHALL"

    def go(r) -> ToolResult:
        r.flushall()
        return ToolResult.ok(inv, "Flushed every database on the server.")

    return _guard(inv, go, p, ctx)


def _del_preview(p: DelParams, ctx: ActionContext) -> ToolResult:
    inv = "EXISTS/TYPE " + " ".join(p.keys)

    def go(r) -> ToolResult:
        lines = []
        for key in p.keys:
            kind = r.type(key)
            ttl = r.ttl(key) if kind != "none" else -2
            expiry = f", expires in {ttl} s" if ttl >= 0 else ""
            lines.append(f"{key}: {'missing' if kind == 'none' else kind}{expiry}")
        present = sum(1 for line in lines if not line.endswith("missing"))
        return ToolResult.ok(inv, f"{present} of {len(p.keys)} keys exist:\n" + "\n".join(lines))

    return _guard(inv, go, p, ctx)


def _flush_preview(p: FlushParams, ctx: ActionContext) -> ToolResult:
    inv = "INFO keyspace"

    def go(r) -> ToolResult:
        keyspace = r.info("keyspace")
        sample = list(itertools.islice(r.scan_iter(count=100), 5))
        dbs = ", ".join(f"{db}: {v.get('keys', 0)} keys" for db, v in keyspace.items()) or "empty"
        return ToolResult.ok(inv, f"Server keyspace: {dbs}\nThis database has {r.dbsize()} keys, "
                                  f"e.g. {', '.join(sample) or '(none)'}")

    return _guard(inv, go, p, ctx)


ACTIONS: list[Action[Any]] = [
    Action(
        name="info",
        description="Read Redis server INFO (memory, clients, stats, replication, keyspace...). "
        "Use first when investigating Redis latency, memory or connection problems.",
        tier=Tier.OBSERVE,
        params=InfoParams,
        summary=lambda p: f"Read Redis INFO{f' ({p.section})' if p.section else ''}",
        run=_info,
        timeout=20,
    ),
    Action(
        name="slowlog",
        description="List the slowest recent Redis commands (SLOWLOG GET). Use for latency spikes.",
        tier=Tier.OBSERVE,
        params=SlowlogParams,
        summary=lambda p: f"Read the last {p.count} Redis slow log entries",
        run=_slowlog,
        timeout=20,
    ),
    Action(
        name="get",
        description="Read the string value of one Redis key.",
        tier=Tier.OBSERVE,
        params=GetParams,
        summary=lambda p: f"Read Redis key `{p.key}`",
        run=_get,
        timeout=20,
    ),
    Action(
        name="scan",
        description="List Redis keys matching a glob pattern (SCAN, never KEYS), up to a limit.",
        tier=Tier.OBSERVE,
        params=ScanParams,
        summary=lambda p: f"List Redis keys matching `{p.match}` (up to {p.limit})",
        run=_scan,
        timeout=30,
    ),
    Action(
        name="exists",
        description="Tell which of some Redis keys exist (exact names).",
        tier=Tier.OBSERVE,
        params=ExistsParams,
        summary=lambda p: f"Check whether {len(p.keys)} Redis key(s) exist: "
        + ", ".join(p.keys[:5]) + (" …" if len(p.keys) > 5 else ""),
        run=_exists,
        timeout=20,
    ),
    Action(
        name="del",
        description="Delete specific Redis keys by exact name. Changes data: needs approval.",
        tier=Tier.SANDBOX_EXECUTE,
        params=DelParams,
        summary=lambda p: f"Delete {len(p.keys)} Redis key(s): " + ", ".join(p.keys[:5])
        + (" …" if len(p.keys) > 5 else ""),
        run=_del,
        timeout=30,
        preview=_del_preview,
        check=Check("exists", lambda p: {"keys": p.keys, "db": p.db}, _keys_gone,
                    "none of the keys exists any more (EXISTS = 0)"),
    ),
    Action(
        name="flushdb",
        description="Delete EVERY key in one Redis database. Destructive and irreversible.",
        tier=Tier.PRODUCTION,
        params=FlushParams,
        summary=lambda p: "Delete every key in the Redis database"
        + (f" {p.db}" if p.db is not None else ""),
        run=_flushdb,
        timeout=60,
        preview=_flush_preview,
    ),
    Action(
        name="flushall",
        description="Delete EVERY key in EVERY database of the Redis server. Destructive.",
        tier=Tier.PRODUCTION,
        params=FlushParams,
        summary=lambda p: "Delete every key in every Redis database on the server",
        run=_flushall,
        timeout=60,
        preview=_flush_preview,
    ),
]


def _target(action: Action[Any], params: BaseModel, config: RedisConfig) -> Target:
    db = _db(params, config)  # type: ignore[arg-type]
    return Target(
        kind="redis",
        name=f"{config.host}:{config.port}/{db}",
        attrs={"host": config.host, "port": str(config.port), "db": str(db)},
    )


def _egress(action: Action[Any], params: BaseModel, config: RedisConfig) -> list[Endpoint]:
    return [Endpoint(host=config.host, port=config.port)]


def _secrets(action: Action[Any], params: BaseModel, config: RedisConfig) -> list[SecretRef]:
    return config.refs("redis", action.tier)


TOOLSET: Toolset[RedisConfig] = Toolset(
    name="redis",
    description="Inspect a Redis server (INFO, slow log, keys) and, with approval, delete data.",
    config=RedisConfig,
    actions=ACTIONS,
    target=_target,
    egress=_egress,
    secrets=_secrets,
    preload=("redis",),
)
