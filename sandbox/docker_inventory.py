"""The containers the Docker connector may name, as opsbot last saw them on the engine.

Policy must see the labels of the exact container an action will touch, but policy is pure (no
I/O). So opsbot lists the engine's containers on the host every few seconds and hands the list
to the connector's config (``tools.docker.DockerConfig.containers``); the target, the approval
hash and the proxy grant are all computed from it. A container's id, name-at-creation, image and
labels never change, so a stale list can only fail safe: a name that now points to a new
container resolves to a different id, which changes the action's hash (an approval for the old
one no longer applies) or is refused by the proxy. opsbot's own sandbox containers (label
``opsbot``) are never listed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import docker

from sandbox import inventory
from tools.docker import ContainerFact

REFRESH_S = 3.0


class DockerInventory:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._client: docker.DockerClient | None = None

    async def facts(self) -> tuple[ContainerFact, ...]:
        return await asyncio.to_thread(self._list)

    async def watch(self, changed: Callable[[tuple[ContainerFact, ...]], Awaitable[None] | None],
                    interval: float = REFRESH_S) -> None:
        """Call ``changed`` with the list whenever it differs from the last one; forever."""
        await inventory.watch(self.facts, changed, interval, "docker_inventory.unavailable",
                              (docker.errors.DockerException,), lambda e: type(e).__name__)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _list(self) -> tuple[ContainerFact, ...]:
        if self._client is None:
            self._client = docker.DockerClient(base_url=f"unix://{self.socket_path}", timeout=20)
        listed = self._client.api.containers(all=True)
        return tuple(sorted((_fact(c) for c in listed if "opsbot" not in (c.get("Labels") or {})),
                            key=lambda f: f.name))


def _fact(listed: dict) -> ContainerFact:
    names = listed.get("Names") or ["/" + listed["Id"][:12]]
    return ContainerFact(id=listed["Id"], name=names[0].lstrip("/"), image=listed.get("Image", ""),
                         state=listed.get("State", ""), labels=dict(listed.get("Labels") or {}))
