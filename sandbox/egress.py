"""Per-action egress: TCP forwarders from the run's network gateway to declared endpoints.

A container with egress sits alone on an *internal* Docker network: no route out, no NAT. The
only host addresses it can reach are on the network's bridge; the firewall (firewall.py) admits
just the forwarder ports there. Each declared ``host:port`` gets one :class:`Forwarder`
listening on ``<gateway>:<ephemeral port>`` inside the opsbot process, which connects to
exactly that ``host:port`` (resolved on the host, so the container needs no DNS). The runner
tells the action where to dial through ``SandboxRequest.endpoints``, read by
``ActionContext.address()``.

Usage::

    forwarders = await open_forwarders("172.18.0.1", [Endpoint(host="127.0.0.1", port=6379)])
    endpoints_map(forwarders)  # {"127.0.0.1:6379": "172.18.0.1:40211"}
    await close_forwarders(forwarders)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog

from tools.base import Endpoint

CONNECT_TIMEOUT_S = 10.0
CHUNK = 65536

log = structlog.get_logger(__name__)


class Forwarder:
    """Relays every connection accepted on ``listen_host`` to one endpoint, both ways."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.address = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def listen(self, listen_host: str) -> str:
        self._server = await asyncio.start_server(self._accept, host=listen_host, port=0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = f"{host}:{port}"
        return self.address

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._relay(reader, writer)
        finally:
            self._writers.discard(writer)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.wait_for(
                asyncio.open_connection(self.endpoint.host, self.endpoint.port), CONNECT_TIMEOUT_S
            )
        except (TimeoutError, OSError) as e:
            log.info("sandbox.egress.refused", endpoint=str(self.endpoint), error=type(e).__name__)
            await _close(writer)
            return
        up_reader, up_writer = upstream
        self._writers.add(up_writer)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._writers.discard(up_writer)
            await _close(up_writer)
            await _close(writer)

    async def close(self) -> None:
        """Stop listening and cut every relayed connection (both sides see it end at once)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then pass the half-close on (the other direction may still be busy)."""
    with contextlib.suppress(OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, asyncio.CancelledError):
        await writer.wait_closed()


async def open_forwarders(listen_host: str, egress: Sequence[Endpoint]) -> list[Forwarder]:
    """One listening forwarder per distinct endpoint; all or nothing."""
    forwarders = [Forwarder(endpoint) for endpoint in dict.fromkeys(egress)]
    try:
        for forwarder in forwarders:
            await forwarder.listen(listen_host)
    except OSError:
        await close_forwarders(forwarders)
        raise
    return forwarders


def endpoints_map(forwarders: Sequence[Forwarder]) -> dict[str, str]:
    return {str(f.endpoint): f.address for f in forwarders}


async def close_forwarders(forwarders: Sequence[Forwarder]) -> None:
    await asyncio.gather(*(f.close() for f in forwarders), return_exceptions=True)
