"""opsbot as a real operating-system process, for scenarios that stop it the hard way.

``BotProcess`` runs ``python -m bot.cli serve`` (or the ``opsbot`` console script) with an
environment that names only the emulators and services a test started (DESIGN §6 variable
names, nothing inherited from the developer's shell, and ``.env`` out of reach because the
working directory is the data directory). It waits for the ``listening`` log line and for
``GET /healthz``, keeps the JSON log lines the bot writes on stderr, and can stop it with
SIGTERM (graceful) or SIGKILL (a crash).

Usage::

    async def test_x(bot_processes, slack_emulator, redis_server, sandbox_image, tmp_path):
        env = bot_env(slack_emulator, tmp_path / "data", redis_server.url, sandbox_image)
        bot = await bot_processes.start(env)
        async with SlackClient(bot.events_url) as client: ...
        await bot.kill()                            # SIGKILL, like an OOM kill
        again = await bot_processes.start(env)      # same OPSBOT_DATA_DIR: recovers
        AuditFile(again.data_dir).rows("sandbox.exec")

``bot_processes`` kills whatever is still running at the end of the test and removes the
containers and networks of every data directory it ran, so a failed test leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import docker
import psycopg
import pytest
from psycopg.rows import dict_row

from graph.surface import RunRef, RunState
from sandbox.config import SandboxConfig
from sandbox.hardening import instance_filter
from sandbox.runner import SandboxRunner
from tests.fakes.slack import SlackEmulator
from tests.scenarios.harness import CHANNEL, GROUPIE, POLICY, Harness

ROOT = Path(__file__).resolve().parents[2]
# Variables opsbot reads (DESIGN §6) or that would change its behaviour: never inherited.
FOREIGN = ("SLACK_", "OPSBOT_", "VAULT_", "BAO_", "OPENAI_", "GITHUB_TOKEN", "REDIS_URL",
           "DOCKER_HOST", "QDRANT_URL", "PAGERDUTY_", "PULUMI_")
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


def opsbot_env(data_dir: Path, redis_url: str, image: str, policy: str = POLICY,
               **more: str) -> dict[str, str]:
    """The environment of an opsbot process: nothing inherited that opsbot reads, ``policy``
    written into ``data_dir``, a Redis and a sandbox image.

    ``more`` adds or overrides variables by their real names (``VAULT_ADDR=...``).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    policy_file = data_dir / "policy.yml"
    policy_file.write_text(policy)
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env.update({"REDIS_URL": redis_url, "OPSBOT_DATA_DIR": str(data_dir),
                "OPSBOT_POLICY": str(policy_file), "OPSBOT_PORT": "0",
                "OPSBOT_SANDBOX_IMAGE": image, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    env.update(more)
    return env


def bot_env(slack: SlackEmulator, data_dir: Path, redis_url: str, image: str, *,
            socket_mode: bool = False, policy: str = POLICY, **more: str) -> dict[str, str]:
    """:func:`opsbot_env` wired to ``slack`` (its ops channel and SRE user group set up) with
    two workers."""
    slack.add_channel(CHANNEL, "ops")
    slack.set_usergroup("S0SRE", [GROUPIE])
    wiring = {**slack.env(socket_mode=socket_mode), "OPSBOT_WORKERS": "2", **more}
    return opsbot_env(data_dir, redis_url, image, policy, **wiring)


class BotExited(RuntimeError):
    """The bot process ended before it was ready; the message carries its log tail."""


@dataclass
class BotProcess:
    """One ``opsbot serve`` process; ``start`` it, talk to ``url``, then stop or kill it."""

    env: dict[str, str]
    console_script: bool = False
    args: tuple[str, ...] = ("serve",)  # ("serve", "--role", "ingress") or ("worker",)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        stamp = time.strftime("%H%M%S") + f"-{time.monotonic_ns() % 10**6}"
        self.log_path = self.data_dir / f"stderr-{stamp}.log"

    @property
    def data_dir(self) -> Path:
        return Path(self.env["OPSBOT_DATA_DIR"])

    @property
    def instance(self) -> str:
        """The sandbox instance this process runs (names every container and network it
        makes), from its start-up log line; empty before it started one."""
        return next((e["instance"] for e in self.logs() if e.get("event") == "sandbox.started"), "")

    @property
    def acceptor(self) -> dict[str, Any]:
        """The acceptor's start-up log line (``port``, ``pid``; OPSBOT_ACCEPTOR_PORT); empty
        until it listens."""
        return next((e for e in self.logs() if e.get("event") == "acceptor listening"), {})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events_url(self) -> str:
        return f"{self.url}/slack/events"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "start() the bot first"
        return self.proc.pid

    def command(self) -> list[str]:
        if self.console_script:
            return [str(Path(sys.executable).parent / "opsbot"), *self.args]
        return [sys.executable, "-m", "bot.cli", *self.args]

    async def start(self, timeout: float = START_TIMEOUT_S) -> BotProcess:
        """Spawn the process and return once ``/healthz`` answers 200."""
        self.proc = self._spawn()
        deadline = time.monotonic() + timeout
        self.port = await self._wait(self._listening_port, deadline, "log `listening`")
        await self._wait(self._healthy, deadline, "answer GET /healthz")
        return self

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Its own session, so a signal meant for pytest never reaches the bot, and back."""
        with self.log_path.open("wb") as log:
            return subprocess.Popen(self.command(), env=self.env, cwd=self.data_dir,
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    async def _wait(self, probe, deadline: float, what: str) -> Any:
        while True:
            found = await probe()
            if found:
                return found
            if self.proc is None or self.proc.poll() is not None:
                raise BotExited(f"opsbot exited ({self.returncode}) before it could {what}:\n"
                                f"{self.tail()}")
            if time.monotonic() > deadline:
                raise BotExited(f"opsbot did not {what} in time:\n{self.tail()}")
            await asyncio.sleep(0.05)

    async def _listening_port(self) -> int:
        return next((int(e["port"]) for e in self.logs() if e.get("event") == "listening"), 0)

    async def _healthy(self) -> bool:
        try:
            timeout = aiohttp.ClientTimeout(total=2)
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.get(f"{self.url}/healthz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    async def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        return await self.stop(signal.SIGTERM, timeout)

    async def kill(self) -> int:
        """SIGKILL: no clean-up code runs, exactly like a crash or an OOM kill."""
        return await self.stop(signal.SIGKILL, STOP_TIMEOUT_S)

    async def stop(self, sig: signal.Signals, timeout: float = STOP_TIMEOUT_S) -> int:
        if not self.alive:
            return self.returncode if self.returncode is not None else 0
        assert self.proc is not None
        self.proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"opsbot ignored {sig.name} for {timeout} s:\n{self.tail()}")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def stderr(self) -> str:
        """Everything the process wrote (stdout and stderr share the file)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (non-JSON lines are skipped; see ``stderr``)."""
        events = []
        for line in self.stderr().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.stderr().splitlines()[-lines:])


@dataclass
class ProcessHarness(Harness):
    """The scenario harness's helpers (command, card, click, report) aimed at a process."""

    bot: BotProcess  # type: ignore[assignment]

    async def ended(self, run_id: str, timeout: float = 30) -> None:
        """Waits until the process's records show the run in a final state (read from outside,
        as an operator would: the process has no runtime to ask)."""
        records = AuditFile.of(self.bot.env)

        async def over() -> bool:
            state = await asyncio.to_thread(records.run_state, run_id)
            return state is not None and RunState(state).final
        await self.slack.wait_for(over, timeout)


class AuditFile:
    """Reads a bot's records from outside the process, as an operator would: its SQLite data
    file, or (``dsn``) the PostgreSQL database of a scale-out deployment."""

    def __init__(self, data_dir: Path, dsn: str | None = None):
        self.path = data_dir / "opsbot.sqlite"
        self.dsn = dsn

    @classmethod
    def of(cls, env: dict[str, str]) -> AuditFile:
        """The records of the processes started with ``env``."""
        return cls(Path(env["OPSBOT_DATA_DIR"]), env.get("OPSBOT_DATABASE_URL"))

    def _query(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        if self.dsn is not None:
            with psycopg.connect(self.dsn, row_factory=dict_row) as pg:
                return pg.execute(sql.replace("?", "%s"), args).fetchall()
        conn = sqlite3.connect(self.path, timeout=10)
        try:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute(sql, args).fetchall()]
        finally:
            conn.close()

    def rows(self, kind: str, run_id: str | None = None) -> list[dict[str, Any]]:
        """Audit rows of one kind (for one run), oldest first, ``data`` decoded."""
        sql, args = "select * from audit where kind = ?", [kind]
        if run_id is not None:
            sql, args = sql + " and run_id = ?", [kind, run_id]
        return [{**r, "data": _decoded(r["data"])} for r in self._query(sql + " order by id", args)]

    def run_state(self, run_id: str) -> str | None:
        found = self._query("select state from runs where id = ?", [run_id])
        return found[0]["state"] if found else None

    def runs(self) -> list[tuple[RunRef, RunState]]:
        """Every run, oldest first (as ``RunStore.in_states`` returns them)."""
        rows = self._query("select ref, state from runs order by created_at", [])
        return [(RunRef.model_validate(_decoded(r["ref"])), RunState(r["state"])) for r in rows]


def dump_database(path: Path) -> str:
    """Every row of a SQLite data file as SQL text (canary checks read all of it)."""
    conn = sqlite3.connect(path, timeout=10)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def _decoded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def storage_env(storage: dict[str, str]) -> dict[str, str]:
    """The environment for the ``storage`` fixture's mode (PostgreSQL: its database, and
    heartbeats fast enough that a dead process's jobs are retried within seconds)."""
    if "database_url" not in storage:
        return {}
    return {"OPSBOT_DATABASE_URL": storage["database_url"], "OPSBOT_HEARTBEAT_S": "0.5",
            "OPSBOT_QUEUE_POLL_S": "0.2"}


@dataclass(frozen=True)
class Leftovers:
    """The Docker objects labelled with one opsbot instance."""

    containers: dict[str, dict[str, Any]]  # id -> attrs as listed
    networks: set[str]

    @property
    def pooled(self) -> set[str]:
        return {cid for cid, c in self.containers.items() if c["Labels"].get("opsbot.pool")}

    @property
    def empty(self) -> bool:
        return not self.containers and not self.networks


def leftovers(client: docker.DockerClient, instance: str) -> Leftovers:
    """Every container (running or not) and network of ``instance``, from the Docker API."""
    filters = {"label": ["opsbot=1", *instance_filter(instance)["label"]]}
    containers = client.api.containers(all=True, filters=filters)
    networks = client.api.networks(filters=filters)
    return Leftovers({c["Id"]: c for c in containers}, {n["Id"] for n in networks})


async def reap_instance(instance: str, image: str) -> None:
    """Remove what a bot of ``instance`` left (a runner's start reaps, its close empties)."""
    runner = await SandboxRunner.start(SandboxConfig(instance=instance, image=image, warm_pool=0))
    await runner.close()


class BotProcesses:
    """Starts bot processes for one test and cleans up after all of them."""

    def __init__(self) -> None:
        self.started: list[BotProcess] = []

    async def start(self, env: dict[str, str], console_script: bool = False,
                    args: tuple[str, ...] = ("serve",)) -> BotProcess:
        bot = BotProcess(env, console_script=console_script, args=args)
        self.started.append(bot)
        return await bot.start()

    async def close(self) -> None:
        for bot in self.started:
            if bot.alive:
                await bot.kill()
        for instance, image in {(b.instance, b.env["OPSBOT_SANDBOX_IMAGE"]) for b in self.started}:
            if instance:
                await reap_instance(instance, image)


@pytest.fixture
async def bot_processes() -> AsyncIterator[BotProcesses]:
    processes = BotProcesses()
    try:
        yield processes
    finally:
        await processes.close()
