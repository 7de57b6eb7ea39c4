"""A sandbox container and everything made for it, from creation to removal.

A :class:`Box` is one container, plus, when the action has egress, its own internal network,
the firewall rules on that network's bridge and the forwarders for the declared endpoints.
:class:`Provisioner` makes boxes (cold, or pre-started for the warm pool), gives them egress and
destroys them, always in full: a box is never reused.

Declared endpoint *names* (egress.py) must resolve to the box's gateway inside the container. A
cold box gets them as Docker ``extra_hosts`` when it is created. A pooled box was created before
any request, so the names are appended to its hosts file on the host (``HostsPath`` of
``docker inspect``, bind-mounted as the container's ``/etc/hosts``, which glibc reads on every
lookup). That needs root on the engine's host, like the firewall; when the write fails, runs
with named endpoints go cold from then on (``Provisioner.pool_names``).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Network

import structlog

from sandbox.config import SandboxConfig
from sandbox.egress import (
    Forwarder,
    close_forwarders,
    endpoints_map,
    named_hosts,
    open_forwarders,
)
from sandbox.engine import Attachment, Engine, EngineError, NetworkInfo
from sandbox.firewall import Firewall
from sandbox.hardening import ENTRYPOINT, Identity, container_spec
from sandbox.spares import SpareNetworks
from sandbox.stream import Channel
from tools.base import Endpoint, Mount

log = structlog.get_logger(__name__)

SUBNET_PREFIX = 28
SUBNET_ATTEMPTS = 8


@dataclass
class Box:
    container: str
    name: str
    network: NetworkInfo | None = None
    forwarders: list[Forwarder] = field(default_factory=list)
    attachment: Attachment | None = None
    channel: Channel | None = None
    pooled: bool = False
    confined: bool = False  # the firewall rules of its network are in place
    hosts_path: str | None = None  # pooled egress box: its hosts file, if opsbot may write it
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def network_name(self) -> str:
        return self.network.name if self.network else "none"

    @property
    def endpoints(self) -> dict[str, str]:
        return endpoints_map(self.forwarders)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = round(time.perf_counter() - began, 4)


def slug(text: str, limit: int = 24) -> str:
    """Something Docker accepts inside a container name."""
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", text).strip("-.")[:limit] or "x"


class HostsFileError(OSError):
    """A pooled box's hosts file could not take the run's endpoint names."""


class Provisioner:
    """Creates, equips and destroys boxes; owns the set of live containers and networks."""

    def __init__(self, engine: Engine, firewall: Firewall, config: SandboxConfig, image: str):
        self.engine = engine
        self.firewall = firewall
        self.config = config
        self.image = image
        self.containers: set[str] = set()
        self.networks: set[str] = set()
        self.pool_names = True  # pooled boxes can take endpoint names (until a write fails)
        self.spares = SpareNetworks(self._spare_network, self._drop_network,
                                    config.spare_networks)

    async def create(
        self, identity: Identity, egress: bool, command: list[str] | None = ENTRYPOINT,
        names: Sequence[str] = (), mounts: Sequence[Mount] = (),
    ) -> Box:
        """A created (not started) container, on its own network when ``egress``, with
        ``names`` resolving to that network's gateway.

        Cancellation-safe: a Docker call already sent finishes in its thread whatever happens
        to the awaiting task, so the work runs shielded and, if the caller is cancelled or
        anything fails, whatever it made is destroyed before the error propagates."""
        token = secrets.token_hex(5)
        label = identity.pool and f"pool-{identity.pool}" or slug(identity.call_id)
        box = Box(container="", name=f"opsbot-{identity.instance}-{label}-{token}",
                  pooled=bool(identity.pool))
        work = asyncio.ensure_future(
            self._build(box, identity, egress, command, token, names, mounts))
        try:
            await asyncio.shield(work)
        except BaseException:
            await asyncio.gather(work, return_exceptions=True)
            await self.destroy(box)
            raise
        return box

    async def _build(self, box: Box, identity: Identity, egress: bool,
                     command: list[str] | None, token: str, names: Sequence[str],
                     mounts: Sequence[Mount]) -> None:
        if egress:
            with box.phase("network"):
                # a cold box takes a network made ahead; the pool's boxes (made ahead
                # themselves) create their own
                box.network = None if identity.pool else self.spares.take()
                if box.network is None:
                    await self._network(box, identity, token)
        gateway = box.network.gateway if box.network else None
        hosts = {name: gateway for name in names if gateway}
        spec = container_spec(self.config, self.image, identity, box.name, box.network_name,
                              command, hosts, mounts)
        with box.phase("create"):
            box.container = await self.engine.create(spec)
        self.containers.add(box.container)

    async def _network(self, box: Box, identity: Identity, token: str) -> None:
        box.network = await self._new_network(identity, token)

    async def _new_network(self, identity: Identity, token: str) -> NetworkInfo:
        name = f"opsbot-{identity.instance}-{token}"
        for attempt in range(SUBNET_ATTEMPTS):
            try:
                network = await self.engine.create_network(
                    name, f"ob{token}", identity.labels(), self._subnet())
                break
            except EngineError as e:
                if "overlap" not in e.explanation or attempt == SUBNET_ATTEMPTS - 1:
                    raise
        self.networks.add(network.id)
        return network

    async def _spare_network(self) -> NetworkInfo:
        return await self._new_network(Identity(self.config.instance, pool="network"),
                                       secrets.token_hex(5))

    async def _drop_network(self, network: NetworkInfo) -> None:
        await self._remove_network(network.id)

    def _subnet(self) -> IPv4Network:
        """A random /28 of the configured range (a clash with a live network is retried)."""
        pool = self.config.egress_subnets
        index = secrets.randbelow(2 ** (SUBNET_PREFIX - pool.prefixlen))
        return IPv4Network((int(pool.network_address) + index * 16, SUBNET_PREFIX))

    async def equip(self, box: Box, egress: Sequence[Endpoint]) -> None:
        """Open forwarders for the declared endpoints and admit them through the firewall
        (a pooled box also learns the endpoint names; a cold box got them at creation)."""
        if not egress:
            return
        assert box.network is not None, "egress needs a box created with egress=True"
        with box.phase("egress"):
            if box.pooled:
                await self._name(box, named_hosts(egress))
            box.forwarders = await open_forwarders(box.network.gateway, egress,
                                                   self.config.upstreams)
            await self._confine(box, [f.port for f in box.forwarders])

    async def _confine(self, box: Box, ports: list[int]) -> None:
        """The whole rule set in one change when the box has none yet, else just the ports."""
        assert box.network is not None
        bridge, gateway = box.network.bridge, box.network.gateway
        if box.confined:
            await self.firewall.allow(bridge, gateway, ports)
        else:
            await self.firewall.confine(bridge, gateway, ports)
            box.confined = True

    async def locate_hosts(self, box: Box) -> None:
        """Find a started pooled box's hosts file, for :meth:`equip` to add names to."""
        path = await self.engine.hosts_path(box.container)
        box.hosts_path = path if path and os.access(path, os.W_OK) else None

    async def _name(self, box: Box, names: Sequence[str]) -> None:
        if not names:
            return
        assert box.network is not None
        try:
            if box.hosts_path is None:
                raise PermissionError("not writable by opsbot (needs root on the engine's host)")
            lines = "".join(f"{box.network.gateway}\t{name}\n" for name in names)
            await asyncio.to_thread(_append, box.hosts_path, lines)
        except OSError as e:
            self.pool_names = False
            log.warning("sandbox.pool.hosts_unwritable", path=box.hosts_path,
                        error=str(e)[:200], consequence="named endpoints run cold")
            raise HostsFileError(str(e)) from None

    async def attach_and_start(self, box: Box) -> None:
        """Attach first, so no output can be missed, then start, never unconfined: a cold box
        got its whole rule set when it was equipped; a pooled one, which starts long before it
        is equipped, gets the bridge's REJECT rules here and its ports when taken."""
        if box.network is not None and not box.confined:
            await self._confine(box, [])
        with box.phase("attach"):
            box.attachment = await self.engine.attach(box.container)
            box.channel = Channel(box.attachment.sock)
        with box.phase("start"):
            await self.engine.start(box.container)

    async def kill(self, box: Box) -> None:
        """Stop the box now (time-out, output flood); failure is logged, removal follows.

        The attach connection is closed first: the engine does not finish stopping a
        container while its output is still waiting to be copied to an attached client that
        has stopped reading (a flood would otherwise hold ``kill`` until the API timeout)."""
        if box.attachment is not None:
            box.attachment.close()
        if box.container:
            await self._guard("kill", self.engine.kill(box.container))

    async def destroy(self, box: Box) -> None:
        """Remove everything of the box; each step runs even if an earlier one failed."""
        steps = [self._remove_container(box), self.cut_off(box)]
        await asyncio.gather(*steps, return_exceptions=True)
        if box.network is not None:
            await self._guard("firewall", self.firewall.release(box.network.bridge))
            await self._remove_network(box.network.id)

    async def retry_teardown(self) -> int:
        """Remove what a failed teardown left (a container the engine could not remove, the
        network it kept): at close, when whatever blocked it may be gone. A container whose
        removal failed is "dead" in Docker and nothing else would ever remove it."""
        containers, networks = list(self.containers), list(self.networks)
        await asyncio.gather(*(self._remove_container_id(c) for c in containers))
        await asyncio.gather(*(self._remove_network(n) for n in networks))
        return (len(containers) - len(self.containers)) + (len(networks) - len(self.networks))

    async def _remove_container(self, box: Box) -> None:
        if box.container:
            await self._remove_container_id(box.container)

    async def _remove_container_id(self, container: str) -> None:
        """Forgotten only once gone: a failed removal stays tracked for retry_teardown."""
        if await self._guard("container", self.engine.remove(container)):
            self.containers.discard(container)

    async def _remove_network(self, network: str) -> None:
        if await self._guard("network", self.engine.remove_network(network)):
            self.networks.discard(network)

    async def cut_off(self, box: Box) -> None:
        """Close the box's attach connection and forwarders: nothing it runs reaches out any
        more (its firewall rules stay until :meth:`destroy`)."""
        if box.attachment is not None:
            box.attachment.close()
        await close_forwarders(box.forwarders)

    async def _guard(self, what: str, step: Awaitable[None]) -> bool:
        try:
            await step
        except (EngineError, OSError, RuntimeError) as e:
            log.error("sandbox.teardown_failed", what=what, error=str(e)[:300])
            return False
        return True


def _append(path: str, text: str) -> None:
    """In place: the container's /etc/hosts is a bind mount of this very inode."""
    with open(path, "a", encoding="ascii") as hosts:
        hosts.write(text)
