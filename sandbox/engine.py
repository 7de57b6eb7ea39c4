"""The Docker SDK behind asyncio.

docker-py is blocking; every call here runs on a small private thread pool so a slow engine
never blocks the event loop (and never starves the loop's default executor). Only the
attach socket is used directly from the loop, in non-blocking mode (see stream.py).

Usage::

    engine = await Engine.connect("unix:///var/run/docker.sock")
    cid = await engine.create(spec)
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any, TypeVar

import docker
from docker.errors import APIError, DockerException
from docker.types import IPAMConfig, IPAMPool

from sandbox.hardening import ContainerSpec

T = TypeVar("T")
WORKERS = 8


class EngineError(RuntimeError):
    """A Docker call failed; ``step`` says which, ``explanation`` is the engine's own words."""

    def __init__(self, step: str, explanation: str):
        super().__init__(f"{step}: {explanation}")
        self.step = step
        self.explanation = explanation


@dataclass
class Attachment:
    """A hijacked attach connection. ``handle`` keeps docker-py's response (and socket) alive."""

    handle: Any
    sock: socket.socket

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self.handle.close()


@dataclass(frozen=True)
class NetworkInfo:
    id: str
    name: str
    bridge: str
    gateway: str


class Engine:
    def __init__(self, client: docker.DockerClient):
        self.client = client
        self.api = client.api
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="sandbox-docker")

    @classmethod
    async def connect(cls, url: str) -> Engine:
        """Connect; an unreachable engine is an :class:`EngineError`.

        docker-py asks the engine for its API version while it builds the client (a blocking
        round trip, up to the 60 s timeout), so that runs in a thread; it is also the proof
        that the engine answers, so no separate ping is needed."""
        try:
            client = await asyncio.to_thread(docker.DockerClient, base_url=url, timeout=60)
        except DockerException as e:
            raise EngineError(f"reach the Docker engine at {url}", str(e)) from None
        return cls(client)

    async def call(self, step: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except APIError as e:
            raise EngineError(step, str(e.explanation or e)) from None
        except DockerException as e:
            raise EngineError(step, str(e)) from None

    async def image_labels(self, tag: str) -> dict[str, str]:
        found = await self.call("inspect the image", self.api.inspect_image, tag)
        return dict((found.get("Config") or {}).get("Labels") or {})

    async def image_exists(self, tag: str) -> bool:
        try:
            await self.call("inspect the image", self.api.inspect_image, tag)
        except EngineError as e:
            if "No such image" in e.explanation or "not found" in e.explanation.lower():
                return False
            raise
        return True

    async def create(self, spec: ContainerSpec) -> str:
        def create() -> str:
            host_config = self.api.create_host_config(**spec.host)
            return self.api.create_container(host_config=host_config, **spec.create)["Id"]

        return await self.call("create the container", create)

    async def attach(self, container: str) -> Attachment:
        params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        handle = await self.call("attach to the container", self.api.attach_socket,
                                 container, params=params)
        sock = getattr(handle, "_sock", handle)
        if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
            handle.close()
            raise EngineError("attach to the container", "the sandbox needs a unix:// or "
                              "plain tcp:// DOCKER_HOST (not ssh:// or TLS)")
        return Attachment(handle, sock)

    async def start(self, container: str) -> None:
        await self.call("start the container", self.api.start, container)

    async def kill(self, container: str) -> None:
        """Kill if running; a container that already exited or vanished is fine."""
        try:
            await self.call("kill the container", self.api.kill, container)
        except EngineError as e:
            if "is not running" not in e.explanation and "No such container" not in e.explanation:
                raise

    async def remove(self, container: str) -> None:
        try:
            await self.call("remove the container", self.api.remove_container, container,
                            force=True, v=True)
        except EngineError as e:
            if "No such container" not in e.explanation and "already in progress" not in (
                e.explanation
            ):
                raise

    async def state(self, container: str) -> dict[str, Any]:
        info = await self.call("inspect the container", self.api.inspect_container, container)
        return info["State"]

    async def hosts_path(self, container: str) -> str:
        """The host-side file the engine bind-mounts as the container's /etc/hosts (set once
        the container has started; empty before)."""
        info = await self.call("inspect the container", self.api.inspect_container, container)
        return info.get("HostsPath") or ""

    async def wait(self, container: str, timeout: float = 10) -> int | None:
        try:
            done = await self.call("wait for the container", self.api.wait, container,
                                   timeout=timeout)
        except EngineError:
            return None
        return done.get("StatusCode")

    async def rename(self, container: str, name: str) -> None:
        await self.call("rename the container", self.api.rename, container, name)

    async def create_network(
        self, name: str, bridge: str, labels: dict[str, str], subnet: IPv4Network
    ) -> NetworkInfo:
        """An internal bridge network (no route out) on ``subnet``, host side named ``bridge``,
        with the subnet's first address as the gateway (the bridge's address on the host)."""
        gateway = str(next(subnet.hosts()))
        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet), gateway=gateway)])

        def create() -> NetworkInfo:
            created = self.api.create_network(
                name, driver="bridge", internal=True, labels=labels, check_duplicate=True,
                options={"com.docker.network.bridge.name": bridge}, ipam=ipam,
            )
            return NetworkInfo(created["Id"], name, bridge, gateway)

        return await self.call("create the sandbox network", create)

    async def remove_network(self, network: str) -> None:
        try:
            await self.call("remove the sandbox network", self.api.remove_network, network)
        except EngineError as e:
            if "not found" not in e.explanation.lower() and "No such" not in e.explanation:
                raise

    async def containers(self, filters: dict[str, Any]) -> list[str]:
        found = await self.call("list containers", self.api.containers, all=True, quiet=True,
                                filters=filters)
        return [c["Id"] for c in found]

    async def networks(self, filters: dict[str, Any]) -> list[str]:
        found = await self.call("list networks", self.api.networks, filters=filters)
        return [n["Id"] for n in found]

    async def labelled(self, label: str) -> list[dict[str, str]]:
        """The labels of every container and network carrying ``label``."""
        containers = await self.call("list containers", self.api.containers, all=True,
                                     filters={"label": label})
        networks = await self.call("list networks", self.api.networks, filters={"label": label})
        return [item.get("Labels") or {} for item in (*containers, *networks)]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

