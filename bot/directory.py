"""Who is in which Slack user group, and what a channel is called — cached lookups.

Policy names approver/requester groups by Slack user-group id; membership is read with
``usergroups.users.list`` and cached for ``ttl`` seconds. A failed lookup counts as "not a
member" (fail closed) and is logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = structlog.get_logger("opsbot.directory")


class Directory:
    def __init__(
        self,
        client: AsyncWebClient | None,
        groups: Iterable[str] = (),
        ttl: float = 300,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.client = client
        self.groups = tuple(groups)
        self.ttl = ttl
        self.clock = clock
        self._members: dict[str, tuple[float, frozenset[str]]] = {}
        self._channels: dict[str, tuple[float, str]] = {}

    async def groups_of(self, user: str) -> frozenset[str]:
        found = set()
        for group in self.groups:
            if user in await self._group_members(group):
                found.add(group)
        return frozenset(found)

    async def channel_name(self, channel: str) -> str:
        cached = self._channels.get(channel)
        if cached and self.clock() - cached[0] < self.ttl:
            return cached[1]
        name = ""
        if self.client is not None:
            try:
                info = await self.client.conversations_info(channel=channel)
                name = info["channel"].get("name", "") or ""
            except SlackApiError as e:
                log.info("channel name unknown", channel=channel, error=e.response.get("error"))
        self._channels[channel] = (self.clock(), name)
        return name

    async def _group_members(self, group: str) -> frozenset[str]:
        cached = self._members.get(group)
        if cached and self.clock() - cached[0] < self.ttl:
            return cached[1]
        members: frozenset[str] = frozenset()
        if self.client is not None:
            try:
                response = await self.client.usergroups_users_list(usergroup=group)
                members = frozenset(response.get("users", []))
            except SlackApiError as e:
                log.warning("user group lookup failed", group=group, error=e.response.get("error"))
                return members  # not cached: try again next time
        self._members[group] = (self.clock(), members)
        return members


async def channels_of(client, user: str) -> list[str]:
    """Ids of the public and private channels ``user`` is in (``users.conversations``);
    raises ``SlackApiError`` when Slack won't say."""
    response = await client.users_conversations(user=user, types="public_channel,private_channel",
                                                exclude_archived=True, limit=200)
    return [c["id"] for c in response.get("channels", [])]
