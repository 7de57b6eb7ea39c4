"""A private redis-server per test session, on a free loopback port."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.services import free_port


@dataclass
class RedisServer:
    host: str
    port: int
    password: str | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(
            host=self.host, port=self.port, db=db, password=self.password, decode_responses=True
        )


def start_redis(tmp_path, password: str | None = None) -> tuple[subprocess.Popen, RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run scripts/test.sh (it apt-installs it)")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(tmp_path)]
    if password:
        args += ["--requirepass", password]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer("127.0.0.1", port, password)
    deadline = time.monotonic() + 10
    while True:
        try:
            server.client().ping()
            return proc, server
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)


@contextmanager
def private_redis(directory: Path, password: str | None = None) -> Iterator[RedisServer]:
    """A redis-server of a test's own (to pause it, or protect it with ``requirepass``)."""
    directory.mkdir(parents=True, exist_ok=True)
    proc, server = start_redis(directory, password)
    try:
        yield server
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    with private_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_db(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A clean database 0 on the session's Redis server."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()
