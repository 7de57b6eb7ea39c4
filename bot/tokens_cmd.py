"""``opsbot tokens create | list | revoke``: bearer tokens for MCP clients and the task API.

Creating or revoking a token is itself audited (``token.create`` / ``token.revoke``, never the
secret).
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

from bot.errors import ConfigError
from bot.settings import Settings
from bot.tokens import RecordsTokens, Token, issue, parse_expiry
from graph.policy.schema import TIER_NAMES
from graph.records import Records
from tools.base import Tier

_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,}$")


def create(settings: Settings, user: str, toolsets: str, max_tier: str, expires: str,
           channels: str, name: str) -> int:
    token, secret = asyncio.run(_create(settings, user, _toolsets(settings, toolsets),
                                        _tier(max_tier), _channels(channels), expires, name))
    print(f"Created {token.id} for <@{token.user}> ({token.scope()}; "
          f"{_expiry(token)}). The secret is shown once:\n{secret}")
    return 0


async def _create(settings: Settings, user: str, toolsets: tuple[str, ...], tier: Tier,
                  channels: tuple[str, ...], expires: str, name: str) -> tuple[Token, str]:
    if not _USER.match(user):
        raise ConfigError(f"--as {user!r} is not a Slack user id (U… or W…).")
    try:
        expires_in = parse_expiry(expires)
    except ValueError as e:
        raise ConfigError(f"--expires: {e}.") from None
    records = await _open(settings)
    try:
        token, secret = await issue(RecordsTokens(records.tokens), user, toolsets=toolsets,
                                    max_tier=tier, channels=channels, expires_in=expires_in,
                                    name=name)
        await records.audit.record(
            "token.create", None, user, token=token.id, toolsets=list(toolsets),
            max_tier=int(tier), channels=list(channels),
            expires_at=token.expires_at.isoformat() if token.expires_at else None)
    finally:
        await records.close()
    return token, secret


def show(settings: Settings) -> int:
    tokens = asyncio.run(_all(settings))
    if not tokens:
        print("no tokens")
    now = datetime.now(UTC)
    for t in tokens:
        state = t.problem(now) or "active"
        print(f"{t.id}  <@{t.user}>  {t.scope()}  {_expiry(t)}  {state}"
              + (f"  {t.name}" if t.name else ""))
    return 0


def revoke(settings: Settings, token_id: str) -> int:
    if not asyncio.run(_revoke(settings, token_id)):
        print(f"opsbot: no active token {token_id}")
        return 1
    print(f"Revoked {token_id}; requests with it are refused from now on.")
    return 0


async def _all(settings: Settings) -> list[Token]:
    records = await _open(settings)
    try:
        return await RecordsTokens(records.tokens).all()
    finally:
        await records.close()


async def _revoke(settings: Settings, token_id: str) -> bool:
    records = await _open(settings)
    try:
        if not await RecordsTokens(records.tokens).revoke(token_id, datetime.now(UTC)):
            return False
        await records.audit.record("token.revoke", None, None, token=token_id)
        return True
    finally:
        await records.close()


async def _open(settings: Settings) -> Records:
    from bot.wiring import open_records

    return await open_records(settings)


def _list(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))


def _toolsets(settings: Settings, text: str) -> tuple[str, ...]:
    from bot.connectors import mcp_servers
    from tools import TOOLSETS

    servers = mcp_servers(settings)
    known = [t.name for t in TOOLSETS] + [s.name for s in (servers.servers if servers else ())]
    chosen = _list(text)
    bad = [t for t in chosen if t not in known]
    if bad:
        raise ConfigError(f"--toolsets: {', '.join(bad)} is not a toolset of this opsbot; "
                          f"known: {', '.join(known)}.")
    return chosen


def _channels(text: str) -> tuple[str, ...]:
    channels = _list(text)
    bad = [c for c in channels if not _CHANNEL.match(c)]
    if bad:
        raise ConfigError(f"--channels: {', '.join(bad)} is not a channel id (C…).")
    return channels


def _tier(text: str) -> Tier:
    word = text.strip().lower()
    if word.isdigit() and 0 <= int(word) <= 4:
        return Tier(int(word))
    if word in TIER_NAMES:
        return TIER_NAMES[word]
    raise ConfigError(f"--max-tier {text!r} is not a tier; use 0-4.")


def _expiry(token: Token) -> str:
    return f"expires {token.expires_at:%Y-%m-%d %H:%M} UTC" if token.expires_at else "never expires"
