"""Per-action egress: TCP forwarders from the run's network gateway to declared endpoints.

A container with egress sits alone on an *internal* Docker network: no route out, no NAT. The
only host addresses it can reach are on the network's bridge; the firewall (firewall.py) admits
just the forwarder ports there. Each declared ``host:port`` gets one :class:`Forwarder`
listening on the gateway inside the opsbot process, which connects to exactly that
``host:port`` (resolved on the host, or through ``SandboxConfig.egress_hosts``). The runner
tells the action where to dial through ``SandboxRequest.endpoints``, read by
``ActionContext.address()``:

* an IP literal (or ``localhost``) is rewritten to the forwarder's address, as it cannot name
  anything else: ``"127.0.0.1:6379" -> "198.18.4.1:40211"``;
* a DNS name keeps its name, so TLS certificate and SNI checks still see the real host: the
  container resolves the name to its gateway (``extra_hosts``, or the hosts file of a pooled
  container) and the forwarder listens on the declared port:
  ``"api.github.com:443" -> "api.github.com:443"``. When that port cannot be had on the gateway
  (below 1024 without root or ``CAP_NET_BIND_SERVICE``, or a host service listening on
  ``0.0.0.0`` at that port, or two names on one port) the forwarder takes a free port and only
  the port changes: ``"api.github.com:443" -> "api.github.com:40212"`` (TLS still verifies;
  an HTTP ``Host`` header then carries the port).

Usage::

    forwarders = await open_forwarders("172.18.0.1", [Endpoint(host="127.0.0.1", port=6379)])
    endpoints_map(forwarders)  # {"127.0.0.1:6379": "172.18.0.1:40211"}
    await close_forwarders(forwarders)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import re
from collections.abc import Mapping, Sequence

import structlog

from sandbox import messages
from tools.base import Endpoint

CONNECT_TIMEOUT_S = 10.0
CHUNK = 65536
LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOST_NAME = re.compile(rf"(?=.{{1,253}}$){LABEL}(?:\.{LABEL})*\.?")
FALLBACK_ERRNOS = (errno.EACCES, errno.EADDRINUSE)

log = structlog.get_logger(__name__)


class EgressError(ValueError):
    """A declared endpoint the sandbox cannot give to a container; the message is a sentence."""


def keeps_name(host: str) -> bool:
    """True for a DNS name the container can be told to resolve to its gateway.

    IP literals have nothing to preserve, and ``localhost`` must stay the container's own
    loopback (its hosts file already says so, and the first entry wins)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        name = host.rstrip(".").lower()
        return name != "localhost" and not name.endswith(".localhost")
    return False


def named_hosts(egress: Sequence[Endpoint]) -> list[str]:
    """The distinct names among ``egress`` that keep their name; a malformed name is refused
    here, before it can reach a container's hosts file."""
    names = list(dict.fromkeys(e.host for e in egress if keeps_name(e.host)))
    for name in names:
        if not HOST_NAME.fullmatch(name):
            raise EgressError(messages.bad_endpoint_host(name))
    return names


class Forwarder:
    """Relays every connection accepted on ``listen_host`` to one endpoint, both ways.

    ``upstream`` is where it connects: the endpoint's own host unless an override says
    otherwise (``SandboxConfig.egress_hosts``)."""

    def __init__(self, endpoint: Endpoint, upstream: str | None = None):
        self.endpoint = endpoint
        self.upstream = upstream or endpoint.host
        self.named = keeps_name(endpoint.host)
        self.address = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def listen(self, listen_host: str) -> str:
        """On the declared port for a named endpoint (an ephemeral one if that port cannot
        be had), on an ephemeral port otherwise."""
        if self.named:
            try:
                return await self._listen(listen_host, self.endpoint.port)
            except OSError as e:
                if e.errno not in FALLBACK_ERRNOS:
                    raise
                log.warning("sandbox.egress.port_fallback", endpoint=str(self.endpoint),
                            reason=errno.errorcode.get(e.errno or 0, "?"))
        return await self._listen(listen_host, 0)

    async def _listen(self, listen_host: str, port: int) -> str:
        self._server = await asyncio.start_server(self._accept, host=listen_host, port=port)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = f"{host}:{port}"
        return self.address

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    @property
    def dial(self) -> str:
        """What the container connects to: the declared name, or the gateway address."""
        return f"{self.endpoint.host}:{self.port}" if self.named else self.address

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._relay(reader, writer)
        finally:
            self._writers.discard(writer)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.wait_for(
                asyncio.open_connection(self.upstream, self.endpoint.port), CONNECT_TIMEOUT_S
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


async def open_forwarders(listen_host: str, egress: Sequence[Endpoint],
                          resolve: Mapping[str, str] | None = None) -> list[Forwarder]:
    """One listening forwarder per distinct endpoint; all or nothing. ``resolve`` maps host
    names to the addresses the forwarders connect to instead of asking DNS."""
    resolve = resolve or {}
    forwarders = [Forwarder(e, resolve.get(e.host)) for e in dict.fromkeys(egress)]
    try:
        for forwarder in forwarders:
            await forwarder.listen(listen_host)
    except OSError:
        await close_forwarders(forwarders)
        raise
    return forwarders


def endpoints_map(forwarders: Sequence[Forwarder]) -> dict[str, str]:
    return {str(f.endpoint): f.dial for f in forwarders}


async def close_forwarders(forwarders: Sequence[Forwarder]) -> None:
    await asyncio.gather(*(f.close() for f in forwarders), return_exceptions=True)
