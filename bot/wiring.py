"""Building the running system from settings: the one place where pieces meet.

``runtime`` opens the records (SQLite, or PostgreSQL in scale-out mode), builds the catalog and
the policy, and starts what this process's role needs:

* ``ingress`` (scale-out only): records, policy, catalog and the run manager — it acks Slack,
  records and defers jobs; no Docker, no Vault, no graph;
* ``worker`` (scale-out only): additionally the credential broker (which revokes what dead
  instances left open), the sandbox runner (which reaps what dead instances left running),
  MCP servers' listings, the Docker connector, the checkpointer and compiled graph, and the
  queue's worker with its periodic tasks;
* ``all``: both, in one process (``opsbot serve``; in embedded mode the only shape).

Front-ends (Slack, console, tests) pass the surface they want.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog
from pydantic import SecretStr, ValidationError

from bot.connectors import (
    connector_configs,
    discover,
    follow,
    github_app_kind,
    install_shell,
    mark_pulumi,
    mcp_servers,
    start_aws,
    start_docker,
)
from bot.errors import ConfigError
from bot.redaction import protect
from bot.runbooks import AsyncRunbooks
from bot.settings import Settings
from bot.tokens import RecordsTokens
from graph.build import build_graph
from graph.commands import answered_by_model
from graph.checkpoints import Graphs, postgres_graphs, sqlite_graphs
from graph.deps import GraphDeps, Limits
from graph.driver import Driver
from graph.lease import Lease, LocalLease, NoLease, PgLease
from graph.leases import revoke_orphaned
from graph.mcp import Discovery
from graph.policy import Policy, PolicyError, load_policy, parse_policy
from graph.queue import JobQueue, LocalQueue
from graph.quota import Quota, asks_llm
from graph.records import Records
from graph.runs import RunManager
from graph.schedules import Schedule, ScheduledSurface, ScheduleError, Scheduler, load_schedules
from graph.surface import Surface
from sandbox.config import SandboxConfig, new_instance
from sandbox.credentials import CredentialBroker, VaultConfig, VaultError
from sandbox.engine import EngineError
from sandbox.instances import InstanceInUse
from sandbox.runner import SandboxRunner
from tools import TOOLSETS
from tools.catalog import Catalog

log = structlog.get_logger("opsbot.wiring")

CONSOLE_POLICY = """\
version: 1
groups:
  console: {users: [UCONSOLEAPPROVER]}
defaults:
  approvers: [console]
"""
EXPIRY_SWEEP_S = 30
DEDUPE_PRUNE_S = 3600


class Role(StrEnum):
    ALL = "all"
    INGRESS = "ingress"
    WORKER = "worker"

    @property
    def works(self) -> bool:
        return self is not Role.INGRESS


@dataclass
class Runtime:
    settings: Settings
    role: Role
    catalog: Catalog
    policy: Policy
    records: Records
    queue: JobQueue
    runs: RunManager
    driver: Driver | None = None
    sandbox: SandboxRunner | None = None
    broker: CredentialBroker | None = None
    mcp: Discovery | None = None
    schedules: tuple[Schedule, ...] = ()
    scheduler: Scheduler | None = None  # workers: fires the schedules (prepare set by server)

    @property
    def audit(self):
        return self.records.audit

    @property
    def run_store(self):
        return self.records.runs

    @property
    def approvals(self):
        return self.records.approvals

    @property
    def dedupe(self):
        return self.records.dedupe

    @property
    def tokens(self) -> RecordsTokens:
        return RecordsTokens(self.records.tokens)

    async def readiness(self) -> dict[str, str]:
        """What must answer before this process takes work (``GET /readyz``): the database;
        for workers also the Docker engine with the sandbox image, and Vault."""
        checks = {"database": await self.records.ping()}
        if self.sandbox is not None:
            checks["sandbox"] = await _sandbox_ready(self.sandbox)
        if self.broker is not None:
            try:
                await self.broker.check()
                checks["vault"] = "ok"
            except VaultError as e:
                checks["vault"] = str(e)
        return checks


async def _sandbox_ready(sandbox: SandboxRunner) -> str:
    try:
        await sandbox.engine.image_exists(sandbox.image)
    except EngineError as e:
        return str(e)
    return sandbox.image_problem or "ok"


def policy_for(settings: Settings, console: bool = False, catalog: Catalog | None = None
               ) -> Policy:
    try:
        if settings.policy is not None:
            return load_policy(settings.policy, list(catalog.toolsets.values()) if catalog
                               else TOOLSETS)
        if console:
            return parse_policy(CONSOLE_POLICY, "<console policy>")
        return Policy()
    except PolicyError as e:
        raise ConfigError(f"OPSBOT_POLICY: {e}") from None


def schedules_for(settings: Settings, catalog: Catalog) -> tuple[Schedule, ...]:
    try:
        return tuple(load_schedules(settings.schedules, catalog))
    except ScheduleError as e:
        raise ConfigError(f"OPSBOT_SCHEDULES: {e}") from None


def quota_for(settings: Settings, policy: Policy, catalog: Catalog) -> Quota:
    """The policy's limits on starting runs; the LLM budget only matters with an LLM."""
    if settings.openai_api_key is None:
        return Quota(policy.limits, settings.model)
    return Quota(policy.limits, settings.model, lambda task: asks_llm(task, catalog))


def sandbox_config(settings: Settings, instance: str, catalog: Catalog) -> SandboxConfig:
    return SandboxConfig(image=settings.sandbox_image, docker_host=settings.docker_host,
                         instance=instance, egress_hosts=settings.egress_hosts,
                         preload=preloaded(settings, catalog))


def preloaded(settings: Settings, catalog: Catalog) -> list[str]:
    """What the warm pool's boxes import ahead: the configured connectors (``shell`` among
    them when commands are declared), and the MCP client when MCP servers are."""
    return sorted(catalog.configs) + (["mcp"] if settings.mcp is not None else [])


def broker_for(settings: Settings, instance: str = "") -> CredentialBroker:
    vault = None
    if settings.vault_addr:
        if settings.vault_token is None:
            raise ConfigError("VAULT_TOKEN is not set but VAULT_ADDR is: set the token opsbot uses "
                              "to mint per-action credentials.")
        try:
            vault = VaultConfig(addr=settings.vault_addr, token=settings.vault_token)
        except ValidationError as e:
            message = e.errors()[0]["msg"].removeprefix("Value error, ")
            raise ConfigError(f"VAULT_ADDR is invalid: {message}.") from None
    static: dict[str, SecretStr] = {}
    if settings.github_token is not None:
        static["GITHUB_TOKEN"] = settings.github_token
    broker = CredentialBroker(vault, static=static, instance=instance)
    app = github_app_kind(settings)
    if app is not None:
        broker.register(app)
    return broker


def llm_for(settings: Settings) -> Any:
    if settings.openai_api_key is None:
        return None
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=settings.model, api_key=settings.openai_api_key,
                      base_url=settings.openai_base_url, use_responses_api=False,
                      stream_usage=True, max_retries=1, timeout=60)


@contextmanager
def _only_process(data_dir: Path) -> Iterator[None]:
    """Embedded mode is one process per data directory: a second one would re-queue the
    first one's runs. The lock dies with the process, however it dies."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "opsbot.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(
                f"OPSBOT_DATA_DIR={data_dir} is in use by a running opsbot (pid {holder}); stop "
                "it first, or run several processes on PostgreSQL (OPSBOT_DATABASE_URL).") from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def check_role(settings: Settings, role: Role) -> None:
    if role is not Role.ALL and not settings.scale_out:
        raise ConfigError(f"the {role.value} role needs OPSBOT_DATABASE_URL (PostgreSQL): "
                          "without it opsbot is one process (`opsbot serve`).")


async def open_records(settings: Settings) -> Records:
    """The deployment's records; in scale-out mode the schema is brought up to date first
    (idempotent, safe from every replica at once)."""
    if not settings.scale_out:
        from graph.records.sqlite import SqliteRecords

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return SqliteRecords(settings.data_dir / "opsbot.sqlite")
    import psycopg

    from graph.pgqueue import PgQueue
    from graph.records.migrations import migrate
    from graph.records.postgres import PgRecords

    try:
        await migrate(settings.dsn, PgQueue.schema())
        return await PgRecords.open(settings.dsn, max_size=settings.workers + 4,
                                    tx_idle_timeout_s=settings.db_tx_idle_timeout_s)
    except psycopg.Error as e:
        raise ConfigError(f"OPSBOT_DATABASE_URL: PostgreSQL refused or did not answer "
                          f"({type(e).__name__}); check the URL, the server and its "
                          "credentials.") from None


@asynccontextmanager
async def runtime(
    settings: Settings, surface: Surface, console: bool = False, runbooks: Any = None,
    role: Role = Role.ALL,
) -> AsyncIterator[Runtime]:
    check_role(settings, role)
    catalog = Catalog(TOOLSETS, connector_configs(settings))
    install_shell(settings, catalog)
    async with AsyncExitStack() as stack:
        if not settings.scale_out:
            stack.enter_context(_only_process(settings.data_dir))
        records = await open_records(settings)
        stack.push_async_callback(records.close)  # last out: everything below writes to it
        queue = await _queue(settings, stack)
        surface = ScheduledSurface(surface, records)  # schedules' post rules; others pass
        rt = Runtime(settings, role, catalog, Policy(), records, queue,
                     RunManager(records, queue, surface))
        if role.works:
            await _tools(rt, stack)
        else:  # MCP tools as the workers listed them (an ingress runs no sandbox)
            await follow(mcp_servers(settings), catalog, records.listings, stack)
        rt.policy = policy_for(settings, console, catalog)  # its rules may name MCP tools
        protect(settings, rt.policy)  # opsbot's tokens and the policy's secret shapes
        rt.runs.quota = quota_for(settings, rt.policy, catalog)
        rt.schedules = schedules_for(settings, catalog)
        if role.works:
            await _worker(rt, surface, runbooks, stack)
        log.info("opsbot ready", role=role.value, storage=records.mode,
                 toolsets=sorted(catalog.configs), data_dir=str(settings.data_dir))
        yield rt


async def _queue(settings: Settings, stack: AsyncExitStack) -> JobQueue:
    if not settings.scale_out:
        queue = LocalQueue(settings.workers)
        stack.push_async_callback(queue.stop)
        return queue
    from graph.pgqueue import PgQueue, WorkerTuning

    lanes = tuple(settings.worker_lanes.split(","))
    tuning = WorkerTuning(concurrency=settings.workers, heartbeat_s=settings.heartbeat_s,
                          poll_s=settings.queue_poll_s, lanes=lanes)
    queue = PgQueue(settings.dsn, tuning, fenced=not settings.unsafe_no_fencing)
    await queue.open()
    stack.push_async_callback(queue.close)
    return queue


async def _tools(rt: Runtime, stack: AsyncExitStack) -> None:
    """What actions run with: the broker, the sandbox, and connectors started on the host."""
    settings, instance = rt.settings, new_instance(rt.settings.data_dir)
    rt.broker = broker_for(settings, instance)
    try:
        await rt.broker.check()
    except VaultError as e:
        raise ConfigError(f"VAULT_ADDR/VAULT_TOKEN: {e}") from None
    try:
        rt.sandbox = await SandboxRunner.start(sandbox_config(settings, instance, rt.catalog))
    except InstanceInUse as e:
        raise ConfigError(str(e)) from None
    stack.push_async_callback(rt.sandbox.close)
    # what killed predecessors' actions left open (their containers were just reaped)
    await revoke_orphaned(rt.records.audit, rt.broker, rt.sandbox.instances.died_here)
    rt.mcp = await discover(mcp_servers(settings), rt.catalog, rt.sandbox, rt.broker,
                            rt.records.audit, stack, rt.records.listings)
    await start_docker(settings, rt.catalog, rt.broker, stack)
    await start_aws(rt.catalog, rt.broker, stack)
    await mark_pulumi(rt.catalog, rt.sandbox)


async def _worker(rt: Runtime, surface: Surface, runbooks: Any, stack: AsyncExitStack) -> None:
    """The half of a process that runs jobs: checkpoints, graph, driver, queue worker."""
    settings = rt.settings
    assert rt.sandbox is not None and rt.broker is not None
    fenced = not settings.unsafe_no_fencing
    memory = (runbooks.memory(settings.memory_collection)
              if settings.memory and isinstance(runbooks, AsyncRunbooks) else None)
    deps = GraphDeps(catalog=rt.catalog, policy=rt.policy, executor=rt.sandbox, broker=rt.broker,
                     audit=rt.records.audit, executions=rt.records.executions, guard=fenced,
                     worker=rt.sandbox.config.instance, runbooks=runbooks, memory=memory,
                     llm=llm_for(settings), model_name=settings.model, limits=Limits(),
                     trace_content=settings.trace_content)
    graphs = await stack.enter_async_context(_graphs(settings, deps))
    stack.push_async_callback(deps.cleanup.close)  # revocations under way finish first
    lease = await _lease(settings, stack)
    rt.driver = Driver(graphs, rt.records, rt.queue, lease, surface, rt.runs.desk,
                       rt.runs.checklists, recursion_limit=deps.limits.recursion_limit,
                       streams=lambda task: answered_by_model(task, rt.catalog),
                       memory=memory, cleanup=deps.cleanup)
    _periodic(rt, stack)
    if isinstance(rt.queue, LocalQueue):
        for job in await rt.driver.lost_jobs():
            rt.queue.put(job)
    await rt.queue.start(rt.driver.handle)
    stack.push_async_callback(rt.queue.stop)


def _graphs(settings: Settings, deps: GraphDeps):
    build = lambda saver: build_graph(deps, saver)  # noqa: E731
    if settings.scale_out:
        return postgres_graphs(settings.dsn, settings.workers, build,
                               settings.db_tx_idle_timeout_s)
    return sqlite_graphs(settings.data_dir / "checkpoints.sqlite", build)


async def _lease(settings: Settings, stack: AsyncExitStack) -> Lease:
    if settings.unsafe_no_fencing:
        return NoLease()
    if not settings.scale_out:
        return LocalLease()
    lease = PgLease(settings.dsn, settings.workers)
    await lease.open()
    stack.push_async_callback(lease.close)  # after the queue stopped: no drive holds one
    return lease


def _periodic(rt: Runtime, stack: AsyncExitStack) -> None:
    """Approval expiry, dedupe pruning and the schedules (and, scale-out, the stalled-job
    sweep): once per tick across every replica (procrastinate periodic tasks), or in-process
    when embedded."""
    tasks: dict[str, tuple[int, Callable[[], Awaitable[Any]]]] = {
        "expire_approvals": (EXPIRY_SWEEP_S, rt.runs.desk.sweep),
        "prune_dedupe": (DEDUPE_PRUNE_S, rt.records.dedupe.prune),
    }
    if rt.schedules:
        rt.scheduler = Scheduler(rt.schedules, rt.runs, rt.records)
    queue = rt.queue
    if not isinstance(queue, LocalQueue):
        if rt.scheduler is not None:
            tasks["schedules"] = (rt.scheduler.every_s, rt.scheduler.tick)
        every = max(1, round(rt.settings.heartbeat_s))
        tasks["retry_stalled"] = (every, queue.retry_stalled)  # type: ignore[attr-defined]
        for name, (every_s, work) in tasks.items():
            queue.periodic(name, every_s, work)  # type: ignore[attr-defined]
        return
    loops = {name: _every(every_s, work, name) for name, (every_s, work) in tasks.items()}
    if rt.scheduler is not None:
        loops["schedules"] = rt.scheduler.run()  # sleeps until the next fire time
    for name, loop in loops.items():
        task = asyncio.create_task(loop, name=name)
        stack.callback(task.cancel)


async def _every(seconds: float, work: Callable[[], Awaitable[Any]], name: str) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Exception:  # noqa: BLE001 - the next tick tries again
            log.exception("periodic task failed", task=name)
