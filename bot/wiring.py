"""Building the running system from settings: the one place where pieces meet.

``Runtime`` opens the data store, loads policy, starts the sandbox runner (which reaps what a
crashed predecessor left), opens the checkpointer, compiles the graph and starts the run
manager. Front-ends (Slack, console, tests) pass the surface they want.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
import yaml
from docker.errors import DockerException
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from pydantic import BaseModel, SecretStr, ValidationError

from approvals.store import ApprovalStore
from bot.errors import ConfigError
from bot.redaction import protect
from bot.settings import Settings
from bot.tokens import SqliteTokens
from graph.audit import AuditLog
from graph.build import build_graph
from graph.deps import GraphDeps, Limits
from graph.leases import revoke_orphaned
from graph.mcp import Discovery, MCPConfigError, MCPFile, load_servers
from graph.policy import Policy, PolicyError, load_policy, parse_policy
from graph.runs import RunManager
from graph.store import Dedupe, RunStore, open_db
from graph.surface import Surface
from sandbox.config import SandboxConfig, instance_key
from sandbox.credentials.docker import DockerToken
from sandbox.docker_inventory import DockerInventory
from sandbox import messages
from sandbox.docker_proxy import DockerProxy
from sandbox.engine import EngineError
from sandbox.image import PULUMI_LABEL
from sandbox.credentials import CredentialBroker, VaultConfig, VaultError
from sandbox.runner import SandboxRunner
from tools import TOOLSETS
from tools.catalog import Catalog
from tools.docker import TOOLSET as DOCKER
from tools.docker import ContainerFact, DockerConfig
from tools.github import GitHubConfig
from tools.postgres import PostgresConfig
from tools.pulumi import PulumiConfig
from tools.redis import RedisConfig
from tools.shell import build_toolset, load_commands

log = structlog.get_logger("opsbot.wiring")

SHELL_NEEDS = {
    "OPSBOT_SSH_ROLE": "set the Vault SSH role that signs each action's certificate "
                       "(e.g. ssh/sign/opsbot)",
    "OPSBOT_SSH_KNOWN_HOSTS": "point it at a known_hosts file pinning the hosts' keys",
}
CONSOLE_POLICY = """\
version: 1
groups:
  console: {users: [UCONSOLEAPPROVER]}
defaults:
  approvers: [console]
"""


@dataclass
class Runtime:
    settings: Settings
    catalog: Catalog
    policy: Policy
    runs: RunManager
    run_store: RunStore
    approvals: ApprovalStore
    audit: AuditLog
    dedupe: Dedupe
    sandbox: SandboxRunner
    broker: CredentialBroker
    mcp: Discovery | None = None
    tokens: SqliteTokens | None = None


def connector_configs(settings: Settings) -> dict[str, BaseModel]:
    """Each connector's config, for the connectors this deployment has configured."""
    configs: dict[str, BaseModel] = {}
    if settings.redis_url:
        configs["redis"] = _login(RedisConfig, "OPSBOT_REDIS", "REDIS_URL", settings.redis_url,
                                  settings.redis_password_secret, settings.redis_read_role,
                                  settings.redis_write_role)
    if settings.postgres_url:
        configs["postgres"] = _login(PostgresConfig, "OPSBOT_POSTGRES", "OPSBOT_POSTGRES_URL",
                                     settings.postgres_url, settings.postgres_password_secret,
                                     settings.postgres_read_role, settings.postgres_write_role)
    if settings.github_token is not None:
        configs["github"] = _config(GitHubConfig, {"api_url": "OPSBOT_GITHUB_API_URL"},
                                    api_url=settings.github_api_url)
    if settings.pulumi_dir is not None:
        stacks = tuple(s.strip() for s in (settings.pulumi_stacks or "").split(",") if s.strip())
        configs["pulumi"] = _config(
            PulumiConfig, {"work_dir": "OPSBOT_PULUMI_DIR", "backend_url": "OPSBOT_PULUMI_BACKEND",
                           "stacks": "OPSBOT_PULUMI_STACKS"},
            work_dir=str(settings.pulumi_dir), backend_url=settings.pulumi_backend or "",
            stacks=stacks, passphrase_secret=settings.pulumi_passphrase_secret)
    for toolset in TOOLSETS:  # connectors that declare their own settings (Toolset.env)
        names = dict(toolset.env)
        if names and next(iter(names.values())) in settings.connector_env:
            values = {f: settings.connector_env[n] for f, n in names.items()
                      if n in settings.connector_env}
            configs[toolset.name] = _config(toolset.config, names, **values)
    return configs


def install_shell(settings: Settings, catalog: Catalog) -> None:
    """The ``shell`` toolset, built from the commands file (``OPSBOT_COMMANDS``)."""
    if settings.commands is None:
        return
    for name, value in (("OPSBOT_SSH_ROLE", settings.ssh_role),
                        ("OPSBOT_SSH_KNOWN_HOSTS", settings.ssh_known_hosts)):
        if value is None:
            raise ConfigError(f"{name} is not set, but OPSBOT_COMMANDS is: {SHELL_NEEDS[name]}.")
    try:
        config = load_commands(settings.commands.read_text(), ssh_role=settings.ssh_role,
                               known_hosts=settings.ssh_known_hosts.read_text(),  # type: ignore[union-attr]
                               user=settings.ssh_user)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"OPSBOT_COMMANDS: {_shell_problem(e)}") from None
    catalog.install(build_toolset(config), config)


def _shell_problem(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg'].removeprefix('Value error, ')}"
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        return f"line {error.problem_mark.line + 1}: {error.problem} ({error.context or 'YAML'})"
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


async def mark_pulumi(catalog: Catalog, sandbox: SandboxRunner) -> None:
    """``/ops help`` marks the Pulumi toolset unavailable when the image has no Pulumi CLI."""
    if "pulumi" not in catalog.configs:
        return
    try:
        labels = await sandbox.engine.image_labels(sandbox.image)
    except EngineError:
        return  # no image yet: the runner already says so, with the command that fixes it
    if labels.get(PULUMI_LABEL) != "present":
        catalog.mark_unavailable("pulumi", messages.pulumi_cli_missing())


async def start_docker(settings: Settings, catalog: Catalog, broker: CredentialBroker,
                       stack: AsyncExitStack) -> None:
    """The Docker connector: its filtering proxy, its token kind, and the container list that
    policy reads (``sandbox/docker_inventory.py``), kept current in the background."""
    if settings.docker_socket is None:
        return
    inventory = DockerInventory(settings.docker_socket)
    stack.callback(inventory.close)
    try:
        facts = await inventory.facts()
    except DockerException as e:
        raise ConfigError(f"OPSBOT_DOCKER_SOCKET: cannot list containers at "
                          f"{settings.docker_socket} ({type(e).__name__}).") from None
    proxy = DockerProxy(settings.docker_socket)
    await proxy.start()
    stack.push_async_callback(proxy.close)
    broker.register(DockerToken(proxy))

    def install(seen: tuple[ContainerFact, ...]) -> None:
        catalog.install(DOCKER, DockerConfig(proxy_port=proxy.port, containers=seen))

    install(facts)
    watcher = asyncio.create_task(inventory.watch(install), name="docker-inventory")
    stack.callback(watcher.cancel)


def _login(model: type[BaseModel], env: str, url_env: str, url: str, password: str | None,
           read: str | None, write: str | None) -> BaseModel:
    """A database connector's config (``tools.logins.Login``) from its ``<env>_*`` settings."""
    whole = f"{env}_PASSWORD_SECRET" if password and not (read or write) else f"{env}_READ_ROLE"
    names = {"url": url_env, "password_secret": f"{env}_PASSWORD_SECRET",
             "read_role": f"{env}_READ_ROLE", "write_role": f"{env}_WRITE_ROLE", "": whole}
    return _config(model, names, url=url, password_secret=password, read_role=read,
                   write_role=write)


def _config(model: type[BaseModel], names: dict[str, str], **values: Any) -> BaseModel:
    """Build a connector config; a bad value is a ConfigError naming the variable."""
    try:
        return model(**values)
    except (ValidationError, ValueError, OSError) as e:
        if isinstance(e, ValidationError):
            first = e.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else ""
            message = first["msg"].removeprefix("Value error, ")
        else:
            field, message = "", str(e)
        name = names.get(field, next(iter(names.values())))
        raise ConfigError(f"{name} is invalid: {message}.") from None


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


def mcp_servers(settings: Settings) -> MCPFile | None:
    if settings.mcp is None:
        return None
    try:
        return load_servers(settings.mcp, reserved=[t.name for t in TOOLSETS])
    except MCPConfigError as e:
        raise ConfigError(f"OPSBOT_MCP: {e}") from None


async def discover(servers: MCPFile | None, catalog: Catalog, sandbox: SandboxRunner,
                   broker: CredentialBroker, audit: AuditLog, stack: AsyncExitStack
                   ) -> Discovery | None:
    """List the MCP servers' tools into the catalog (at start, then every refresh interval)."""
    if servers is None or not servers.servers:
        return None
    discovery = Discovery(servers, catalog, sandbox, broker, audit)
    await discovery.refresh()
    refresher = asyncio.create_task(discovery.refresher(), name="mcp-refresher")
    stack.callback(refresher.cancel)
    return discovery


def sandbox_config(settings: Settings) -> SandboxConfig:
    return SandboxConfig(image=settings.sandbox_image, docker_host=settings.docker_host,
                         instance=instance_key(settings.data_dir))


def broker_for(settings: Settings) -> CredentialBroker:
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
    return CredentialBroker(vault, static=static, instance=instance_key(settings.data_dir))


def llm_for(settings: Settings) -> Any:
    if settings.openai_api_key is None:
        return None
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=settings.model, api_key=settings.openai_api_key,
                      base_url=settings.openai_base_url, use_responses_api=False,
                      stream_usage=True, max_retries=1, timeout=60)


@asynccontextmanager
async def runtime(
    settings: Settings, surface: Surface, console: bool = False, runbooks: Any = None
) -> AsyncIterator[Runtime]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_db(settings.data_dir / "opsbot.sqlite")
    audit = AuditLog(db)
    catalog = Catalog(TOOLSETS, connector_configs(settings))
    install_shell(settings, catalog)
    servers = mcp_servers(settings)
    broker = broker_for(settings)
    try:
        await broker.check()
    except VaultError as e:
        raise ConfigError(f"VAULT_ADDR/VAULT_TOKEN: {e}") from None
    await revoke_orphaned(audit, broker)  # what a killed predecessor's actions left open
    async with AsyncExitStack() as stack:
        stack.callback(db.close)  # last out: everything below writes to it
        sandbox = await SandboxRunner.start(sandbox_config(settings))
        stack.push_async_callback(sandbox.close)
        discovery = await discover(servers, catalog, sandbox, broker, audit, stack)
        await start_docker(settings, catalog, broker, stack)
        await mark_pulumi(catalog, sandbox)
        policy = policy_for(settings, console, catalog)  # its rules may name MCP tools
        protect(settings, policy)  # opsbot's tokens and the policy's secret shapes
        saver = await stack.enter_async_context(
            AsyncSqliteSaver.from_conn_string(str(settings.data_dir / "checkpoints.sqlite")))
        await saver.setup()  # WAL mode
        # NORMAL sync in WAL mode survives a crashed process (not a power cut), half the fsyncs.
        await saver.conn.execute("pragma synchronous=normal")
        deps = GraphDeps(catalog=catalog, policy=policy, executor=sandbox, broker=broker,
                         audit=audit, runbooks=runbooks, llm=llm_for(settings),
                         model_name=settings.model, limits=Limits())
        graph = build_graph(deps, saver)
        run_store, approvals = RunStore(db), ApprovalStore(db)
        manager = RunManager(graph, run_store, approvals, audit, surface,
                             workers=settings.workers, recursion_limit=deps.limits.recursion_limit)
        await manager.start()
        stack.push_async_callback(manager.stop)
        sweeper = asyncio.create_task(manager.desk.sweeper(), name="approval-sweeper")
        stack.callback(sweeper.cancel)
        log.info("opsbot ready", toolsets=sorted(catalog.configs), data_dir=str(settings.data_dir))
        yield Runtime(settings, catalog, policy, manager, run_store, approvals, audit,
                      Dedupe(db), sandbox, broker, discovery, SqliteTokens(db))
