"""Bearer tokens: who a programmatic caller (an MCP client, the task API) acts as, and how far.

A token names a Slack user (policy sees that person as the requester, exactly as in Slack)
and narrows what they may do through it: ``toolsets`` (none: all), ``max_tier`` and
``channels`` (where its runs may report; the first is the default). The secret is shown once,
at creation; only its SHA-256 is stored (tokens are 256 random bits, so a plain hash suffices),
next to an id that is part of the secret so a lookup never scans. Tokens expire and can be
revoked; both take effect on the next request.

    opsbot tokens create --as U123 --toolsets redis --max-tier 3 --expires 30d
    opsbot tokens list
    opsbot tokens revoke t-0a1b2c3d4e

The store is a small async interface (:class:`TokenStore`): :class:`SqliteTokens` keeps tokens
in the data database; a PostgreSQL store implements the same four methods.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Protocol

import sqlite_utils
from pydantic import BaseModel, ConfigDict

from tools.base import Tier

PREFIX = "opsbot_"
_SECRET = re.compile(r"^opsbot_(t-[0-9a-f]{10})_[A-Za-z0-9_-]{43}$")
_DURATION = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class Token(BaseModel):
    """A token's record (never its secret)."""

    model_config = ConfigDict(frozen=True)

    id: str
    user: str
    toolsets: tuple[str, ...] = ()
    max_tier: Tier = Tier.PRODUCTION
    channels: tuple[str, ...] = ()
    name: str = ""
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def problem(self, now: datetime) -> str | None:
        """Why the token can't be used now, or None."""
        if self.revoked_at is not None:
            return "the token was revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "the token has expired"
        return None

    def allows_toolset(self, toolset: str) -> bool:
        return not self.toolsets or toolset in self.toolsets

    def scope(self) -> str:
        toolsets = ", ".join(self.toolsets) if self.toolsets else "all toolsets"
        return f"{toolsets}, tiers up to {self.max_tier.label}"


class TokenStore(Protocol):
    async def add(self, token: Token, digest: str) -> None: ...

    async def get(self, token_id: str) -> tuple[Token, str] | None: ...

    async def all(self) -> list[Token]: ...

    async def revoke(self, token_id: str, at: datetime) -> bool: ...


class SqliteTokens:
    """Tokens in the data database (``tokens`` table)."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db
        db.execute("create table if not exists tokens (id text primary key, digest text not null,"
                   " record text not null)")

    async def add(self, token: Token, digest: str) -> None:
        self.db.execute("insert into tokens (id, digest, record) values (?, ?, ?)",
                        [token.id, digest, token.model_dump_json()])

    async def get(self, token_id: str) -> tuple[Token, str] | None:
        row = self.db.execute("select record, digest from tokens where id = ?",
                              [token_id]).fetchone()
        return (Token.model_validate_json(row[0]), row[1]) if row else None

    async def all(self) -> list[Token]:
        rows = self.db.execute("select record from tokens order by rowid").fetchall()
        return [Token.model_validate_json(r[0]) for r in rows]

    async def revoke(self, token_id: str, at: datetime) -> bool:
        found = await self.get(token_id)
        if found is None or found[0].revoked_at is not None:
            return False
        revoked = found[0].model_copy(update={"revoked_at": at})
        self.db.execute("update tokens set record = ? where id = ?",
                        [revoked.model_dump_json(), token_id])
        return True


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def issue(store: TokenStore, user: str, *, toolsets: tuple[str, ...] = (),
                max_tier: Tier = Tier.PRODUCTION, channels: tuple[str, ...] = (),
                expires_in: timedelta | None = None, name: str = "",
                now: datetime | None = None) -> tuple[Token, str]:
    """A new token and its secret (the only time the secret exists outside the caller)."""
    now = now or datetime.now(UTC)
    token = Token(id="t-" + secrets.token_hex(5), user=user, toolsets=toolsets,
                  max_tier=max_tier, channels=channels, name=name, created_at=now,
                  expires_at=now + expires_in if expires_in else None)
    secret = f"{PREFIX}{token.id}_{secrets.token_urlsafe(32)}"
    await store.add(token, digest(secret))
    return token, secret


async def authenticate(store: TokenStore, secret: str | None,
                       now: datetime | None = None) -> tuple[Token | None, str]:
    """The token a presented secret belongs to, or None and why (for the 401's body)."""
    found = _SECRET.match(secret or "")
    if not found:
        return None, "missing or malformed bearer token"
    record = await store.get(found.group(1))
    if record is None or not hmac.compare_digest(record[1], digest(secret or "")):
        return None, "unknown bearer token"
    token, _ = record
    problem = token.problem(now or datetime.now(UTC))
    return (None, problem) if problem else (token, "")


def parse_expiry(text: str) -> timedelta | None:
    """``30d``, ``12h``, ``2w``, ``90m`` or ``never``."""
    if text == "never":
        return None
    found = _DURATION.match(text.strip())
    if not found or int(found.group(1)) == 0:
        raise ValueError(f"`{text}` is not a duration; write e.g. 90m, 12h, 30d, 2w or never")
    return timedelta(seconds=int(found.group(1)) * _UNITS[found.group(2)])
