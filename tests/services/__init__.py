"""Fixtures that start real services (Redis, Docker, OpenBao, PostgreSQL) on loopback."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
