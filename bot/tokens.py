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

The store is a small async interface (:class:`TokenStore`): :class:`RecordsTokens` keeps tokens
in the deployment's records (SQLite or PostgreSQL, ``graph/records``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from graph.records import TokenRows
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


class RecordsTokens:
    """Tokens in the deployment's records (either storage mode)."""

    def __init__(self, rows: TokenRows):
        self.rows = rows

    async def add(self, token: Token, digest: str) -> None:
        await self.rows.add(token.id, digest, token.model_dump_json())

    async def get(self, token_id: str) -> tuple[Token, str] | None:
        found = await self.rows.get(token_id)
        return (Token.model_validate_json(found[0]), found[1]) if found else None

    async def all(self) -> list[Token]:
        return [Token.model_validate_json(r) for r in await self.rows.all()]

    async def revoke(self, token_id: str, at: datetime) -> bool:
        found = await self.get(token_id)
        if found is None or found[0].revoked_at is not None:
            return False
        await self.rows.update(token_id, found[0].model_copy(update={"revoked_at": at})
                               .model_dump_json())
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
