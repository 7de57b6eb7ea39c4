"""A private PostgreSQL 15 per test session, on a free loopback port.

``initdb`` + ``postgres`` from Debian's ``/usr/lib/postgresql/15/bin``, trust auth on loopback
for the ``postgres`` superuser and passwords (SCRAM) for every other role (so a dynamic role's
password is really checked), ``pg_stat_statements`` preloaded, durability off (fsync,
synchronous_commit, full_page_writes) because nothing here outlives the session. PostgreSQL
refuses to run as root, so under root the cluster belongs to the ``postgres`` system user
(created if missing) in a private directory under /tmp.

Usage::

    def test_checkpointer(postgres_dsn):          # whole-session server, database `postgres`
        with psycopg.connect(postgres_dsn) as conn: ...

    def test_isolated(postgres_database):         # a fresh database for this test, dropped after
        ...
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.services import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "32MB",
    "shared_preload_libraries": "pg_stat_statements",
}
HBA = """\
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


@dataclass(frozen=True)
class _Owner:
    """Who runs the server: ourselves, or the ``postgres`` user when we are root."""

    uid: int
    gid: int

    @property
    def switch(self) -> dict[str, object]:
        if self.uid == os.geteuid():
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _binary(name: str) -> str:
    path = PG_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: install PostgreSQL 15 (apt-get install postgresql-15)")
    return str(path)


def _owner() -> _Owner:
    if os.geteuid() != 0:
        return _Owner(os.geteuid(), os.getegid())
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
            check=True, capture_output=True,
        )
        entry = pwd.getpwnam("postgres")
    return _Owner(entry.pw_uid, entry.pw_gid)


def _workdir(owner: _Owner) -> Path:
    """A 0700 directory under /tmp owned by the server's user (pytest's tmp is root-only)."""
    workdir = Path(tempfile.mkdtemp(prefix="opsbot-pg-"))
    os.chown(workdir, owner.uid, owner.gid)
    return workdir


def _initdb(workdir: Path, owner: _Owner) -> Path:
    data = workdir / "data"
    done = subprocess.run(
        [_binary("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
         "--no-sync", "--no-instructions"],
        cwd=workdir, capture_output=True, text=True, **owner.switch,
    )
    if done.returncode != 0:
        pytest.fail(f"initdb failed ({done.returncode}):\n{done.stderr[-2000:]}")
    (data / "pg_hba.conf").write_text(HBA)
    return data


def _start(workdir: Path, data: Path, owner: _Owner, port: int,
           settings: dict[str, str]) -> subprocess.Popen[bytes]:
    args = [_binary("postgres"), "-D", str(data), "-p", str(port), "-k", str(workdir)]
    for name, value in settings.items():
        args += ["-c", f"{name}={value}"]
    with (workdir / "postgres.log").open("wb") as log:
        return subprocess.Popen(
            args, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, **owner.switch
        )


def _wait_ready(proc: subprocess.Popen[bytes], dsn: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                pytest.fail(f"postgres did not accept connections:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # "fast" shutdown: roll back sessions, exit cleanly
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def private_postgres(durable: bool = False) -> Iterator[str]:
    """A PostgreSQL 15 server of its own; yields its superuser DSN (database ``postgres``).
    ``durable`` keeps fsync and synchronous commit on, as a deployment would (benchmarks)."""
    owner = _owner()
    workdir = _workdir(owner)
    port = free_port()
    settings = SETTINGS | ({"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
                            "shared_buffers": "128MB"} if durable else {})
    proc = _start(workdir, _initdb(workdir, owner), owner, port, settings)
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        _wait_ready(proc, dsn, workdir / "postgres.log")
        yield dsn
    finally:
        _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """DSN of a session-wide PostgreSQL 15 superuser connection (database ``postgres``)."""
    with private_postgres() as dsn:
        yield dsn


@pytest.fixture
def postgres_database(postgres_dsn: str) -> Iterator[str]:
    """DSN of a fresh, empty database for one test; dropped afterwards."""
    name = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_dsn.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


APP_PASSWORD = "app-" + secrets.token_hex(8)


class App:
    """Sessions of an ordinary login role (``app``) on a test database, as an application's
    would be (opsbot's roles may signal them; a superuser's backend they may not)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conns: list[psycopg.Connection] = []
        self.background: list[tuple[psycopg.Connection, threading.Thread]] = []

    def open(self, autocommit: bool = True) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn, user="app", password=APP_PASSWORD, autocommit=autocommit)
        self.conns.append(conn)
        return conn

    def in_background(self, conn: psycopg.Connection, sql: str) -> dict:
        """Run ``sql`` on ``conn`` in a thread; the returned dict gets its error, if any."""
        outcome: dict = {}

        def go() -> None:
            try:
                conn.execute(sql)
            except psycopg.Error as e:
                outcome["error"] = e

        outcome["thread"] = threading.Thread(target=go, daemon=True)
        self.background.append((conn, outcome["thread"]))
        outcome["thread"].start()
        return outcome

    def close(self) -> None:
        """Queries still running in threads are cancelled and their threads joined first:
        closing a connection another thread is using crashes the interpreter (seen: a
        segfault in psycopg in a full run)."""
        for conn, thread in self.background:
            if thread.is_alive():
                conn.cancel_safe(timeout=5)
            thread.join(10)
        for conn in self.conns:
            conn.close()


@pytest.fixture(scope="session")
def app_role(postgres_dsn: str) -> str:
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(f"create role app login password '{APP_PASSWORD}'")
    return "app"


@pytest.fixture
def app(postgres_database: str, app_role: str) -> Iterator[App]:
    """A fresh database with an ``accounts`` table (ids 1-10, balance 100) the app may change."""
    with psycopg.connect(postgres_database, autocommit=True) as admin:
        admin.execute("create table accounts (id int primary key, balance int not null)")
        admin.execute("insert into accounts select g, 100 from generate_series(1, 10) g")
        admin.execute("grant all on accounts to app")
    sessions = App(postgres_database)
    yield sessions
    sessions.close()
