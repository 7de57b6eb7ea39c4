"""The connectors a deployment has configured: their configs from settings, and the host-side
pieces some of them need started (the shell toolset from its commands file, MCP servers' tool
listings, the Docker connector's proxy and inventory, the Pulumi CLI check).

Each function turns settings into a connector or a :class:`bot.errors.ConfigError` naming the
variable to fix; ``bot/wiring.py`` calls them while assembling a worker.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import structlog
import yaml
from cryptography.hazmat.primitives import serialization
from docker.errors import DockerException
from pydantic import BaseModel, ValidationError

from bot.errors import ConfigError
from bot.settings import Settings
from graph.mcp import Discovery, Follower, MCPConfigError, MCPFile, load_servers
from graph.records import AuditLog, Listings
from sandbox import messages
from sandbox.aws_inventory import AwsInventory
from sandbox.credentials import CredentialBroker, VaultError
from sandbox.credentials.docker import DockerToken
from sandbox.credentials.github_app import GitHubApp, GitHubAppToken
from sandbox.docker_inventory import DockerInventory
from sandbox.docker_proxy import DockerProxy
from sandbox.engine import EngineError
from sandbox.image import PULUMI_LABEL
from sandbox.runner import SandboxRunner
from tools import TOOLSETS
from tools.aws import TOOLSET as AWS
from tools.aws import AwsConfig, InstanceFact
from tools.catalog import Catalog
from tools.docker import TOOLSET as DOCKER
from tools.docker import ContainerFact, DockerConfig
from tools.github import GitHubConfig
from tools.postgres import PostgresConfig
from tools.pulumi import PulumiConfig
from tools.redis import RedisConfig
from tools.shell import build_toolset, load_commands

log = structlog.get_logger(__name__)
SHELL_NEEDS = {
    "OPSBOT_SSH_ROLE": "set the Vault SSH role that signs each action's certificate "
                       "(e.g. ssh/sign/opsbot)",
    "OPSBOT_SSH_KNOWN_HOSTS": "point it at a known_hosts file pinning the hosts' keys",
}
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
    if settings.github_token is not None or settings.github_app_id is not None:
        app = settings.github_app_id is not None  # the App wins: a token per action
        configs["github"] = _config(GitHubConfig, {"api_url": "OPSBOT_GITHUB_API_URL"},
                                    api_url=settings.github_api_url, app=app,
                                    token_secret=None if app else "static:GITHUB_TOKEN")
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


def github_app_kind(settings: Settings) -> GitHubAppToken | None:
    """The credential kind that mints GitHub App installation tokens, when an App is set."""
    names = {"OPSBOT_GITHUB_APP_ID": settings.github_app_id,
             "OPSBOT_GITHUB_APP_INSTALLATION_ID": settings.github_app_installation_id,
             "OPSBOT_GITHUB_APP_PRIVATE_KEY_FILE": settings.github_app_private_key_file}
    if settings.github_app_id is None:
        return None
    missing = [name for name, value in names.items() if value is None]
    if missing:
        raise ConfigError(f"{missing[0]} is not set, but OPSBOT_GITHUB_APP_ID is: the App needs "
                          "its id, its installation id and its private key file (PEM).")
    key_file = settings.github_app_private_key_file
    try:
        pem = key_file.read_text()  # type: ignore[union-attr]
        serialization.load_pem_private_key(pem.encode(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"OPSBOT_GITHUB_APP_PRIVATE_KEY_FILE: cannot read a PEM private key "
                          f"from {key_file} ({type(e).__name__}).") from None
    return GitHubAppToken(GitHubApp(api_url=settings.github_api_url,
                                    app_id=settings.github_app_id,
                                    installation_id=settings.github_app_installation_id,
                                    private_key=pem))


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


async def start_aws(catalog: Catalog, broker: CredentialBroker, stack: AsyncExitStack) -> None:
    """The AWS connector's list of EC2 instances and their tags (``sandbox/aws_inventory.py``),
    which policy reads; listed now, then every minute in the background. If AWS or Vault does
    not answer, opsbot starts anyway: reads work, changes are refused until a listing succeeds."""
    config = catalog.configs.get("aws")
    if not isinstance(config, AwsConfig):
        return
    inventory = AwsInventory(broker, config)

    def install(seen: tuple[InstanceFact, ...]) -> None:
        catalog.install(AWS, config.model_copy(update={"instances": seen}))

    seen = None
    try:
        seen = await inventory.facts()
        install(seen)
    except Exception as e:  # noqa: BLE001 - reported, retried by the watcher
        log.warning("aws_inventory.unavailable", error=str(e) if isinstance(e, VaultError)
                    else type(e).__name__)
    watcher = asyncio.create_task(inventory.watch(install, seen), name="aws-inventory")
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


def mcp_servers(settings: Settings) -> MCPFile | None:
    if settings.mcp is None:
        return None
    try:
        return load_servers(settings.mcp, reserved=[t.name for t in TOOLSETS])
    except MCPConfigError as e:
        raise ConfigError(f"OPSBOT_MCP: {e}") from None


async def follow(servers: MCPFile | None, catalog: Catalog, listings: Listings,
                 stack: AsyncExitStack) -> None:
    """An ingress process's MCP toolsets: what the workers listed, reloaded every 10 s."""
    if servers is None or not servers.servers:
        return
    follower = Follower(servers, catalog, listings)
    await follower.load()
    task = asyncio.create_task(follower.follow(), name="mcp-follower")
    stack.callback(task.cancel)


async def discover(servers: MCPFile | None, catalog: Catalog, sandbox: SandboxRunner,
                   broker: CredentialBroker, audit: AuditLog, stack: AsyncExitStack,
                   listings: Listings | None = None) -> Discovery | None:
    """List the MCP servers' tools into the catalog (at start, then every refresh interval)."""
    if servers is None or not servers.servers:
        return None
    discovery = Discovery(servers, catalog, sandbox, broker, audit, listings)
    await discovery.refresh()
    refresher = asyncio.create_task(discovery.refresher(), name="mcp-refresher")
    stack.callback(refresher.cancel)
    return discovery
