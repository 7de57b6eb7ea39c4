"""Fixtures shared by the sandbox tests."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator

import pytest


class _Listener(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


@pytest.fixture(scope="session")
def host_listener() -> Iterator[int]:
    """A plain service on 0.0.0.0, like a database a careless host exposes to every interface:
    reachable through a sandbox bridge unless the firewall stops it. Yields its port."""
    server = _Listener(("0.0.0.0", 0), socketserver.BaseRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
