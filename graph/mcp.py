"""MCP servers declared by the operator become toolsets of the catalog, and stay current.

``OPSBOT_MCP`` names a YAML file (format in README.md, "MCP")::

    version: 1
    refresh: 10m
    servers:
      - name: git
        transport: stdio
        command: python3
        args: [-m, mcp_server_git, --repository, /repo]
        mounts: [{source: /srv/checkout, target: /repo, writable: true}]

:func:`load_servers` validates it at boot (one sentence per problem, naming the entry and the
key). :class:`Discovery` lists every server's tools *inside the sandbox* (a stdio server is
untrusted code: it never runs on opsbot's host), with the secrets its entry references minted
for that listing, and installs the result in the catalog with :func:`tools.mcp.build_toolset`.
A server that cannot be listed keeps its previous tools (or none, at boot) and says why in
``/ops help``; :meth:`Discovery.refresher` lists again every ``refresh`` interval.

Each listing is also written to the records; an ingress process (which runs no sandbox) builds
the same toolsets from them with :class:`Follower`, so ``/ops <server> <tool>`` and ``/mcp``
know every tool whichever process takes the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import structlog
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from graph.records import AuditLog, Listings
from graph.deps import Broker, Executor
from graph.policy.schema import parse_duration
from sandbox.protocol import SandboxRequest
from tools.base import Status, Toolset
from tools.catalog import Catalog
from tools.mcp import (
    GRACE_S,
    LIST,
    ServerEntry,
    ToolSpec,
    build_toolset,
    list_timeout,
    rejected,
)
from sandbox.credentials import VaultError

log = structlog.get_logger("opsbot.mcp")


class MCPConfigError(ValueError):
    """The ``OPSBOT_MCP`` file is invalid; ``str(e)`` says where and how to fix it."""


class MCPFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    refresh: int = Field(600, description="Seconds between listings (written 10m, 1h ...).")
    servers: tuple[ServerEntry, ...] = ()

    @field_validator("refresh", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        return parse_duration(value)


def load_servers(path: Path, reserved: Sequence[str] = ()) -> MCPFile:
    """The validated file; ``reserved`` are toolset names already taken (redis, github ...)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise MCPConfigError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e}).") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise MCPConfigError(f"{path}{where}: not valid YAML.") from None
    try:
        spec = MCPFile.model_validate(data if data is not None else {})
    except ValidationError as e:
        raise MCPConfigError(f"{path}: {_problem(e, data)}") from None
    _names(path, spec.servers, reserved)
    return spec


def _problem(error: ValidationError, data: Any) -> str:
    item = error.errors(include_url=False)[0]
    parts = [str(p) for p in item["loc"]]
    if len(parts) >= 2 and parts[0] == "servers" and parts[1].isdigit():
        entry = (data.get("servers") or [])[int(parts[1])] if isinstance(data, dict) else {}
        name = entry.get("name") if isinstance(entry, dict) else None
        parts[:2] = [f"servers[{parts[1]}]" + (f" ({name})" if name else "")]
    where = ".".join(parts) or "file"
    message = item["msg"].removeprefix("Value error, ")
    if item["type"] == "missing":
        message = "is missing (write `version: 1` at the top)" if parts == ["version"] else \
            "is missing"
    elif item["type"] == "extra_forbidden":
        message = "is not a known key"
    return f"{where}: {message}."


def _names(path: Path, servers: Sequence[ServerEntry], reserved: Sequence[str]) -> None:
    seen: set[str] = set()
    for entry in servers:
        if entry.name in reserved:
            raise MCPConfigError(f"{path}: server `{entry.name}` has the name of a built-in "
                                 "toolset; choose another name.")
        if entry.name in seen:
            raise MCPConfigError(f"{path}: two servers are named `{entry.name}`.")
        seen.add(entry.name)
        for mount in entry.mounts:
            if not Path(mount.source).exists():
                raise MCPConfigError(f"{path}: server `{entry.name}` mounts {mount.source}, "
                                     "which does not exist on this host.")


class Discovery:
    """Lists the declared servers' tools in the sandbox and keeps the catalog's copy current."""

    def __init__(self, spec: MCPFile, catalog: Catalog, executor: Executor, broker: Broker,
                 audit: AuditLog, listings: Listings | None = None):
        self.spec = spec
        self.catalog = catalog
        self.executor = executor
        self.broker = broker
        self.audit = audit
        self.listings = listings
        self.problems: dict[str, str] = {}
        self._round = 0

    async def refresh(self, only: Sequence[str] | None = None) -> dict[str, str]:
        """List every server (or those named ``only``) at once; returns the problems
        (server -> sentence)."""
        self._round += 1
        chosen = [e for e in self.spec.servers if only is None or e.name in only]
        await asyncio.gather(*(self._refresh(entry) for entry in chosen))
        return dict(self.problems)

    async def refresher(self) -> None:
        while True:
            await asyncio.sleep(self.spec.refresh)
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("mcp.refresh_failed")

    async def _refresh(self, entry: ServerEntry) -> None:
        specs, problem = await self._list(entry)
        if specs is None:
            self.problems[entry.name] = problem
            log.warning("mcp.list_failed", server=entry.name, problem=problem)
            if entry.name not in self.catalog.toolsets:
                self.catalog.install(_unavailable(entry, problem), entry)
            return
        self.problems.pop(entry.name, None)
        skipped = rejected(entry, specs)
        toolset = build_toolset(entry, specs)
        self.catalog.install(toolset, entry)
        if self.listings is not None:
            await self.listings.save(entry.name, [s.model_dump(mode="json") for s in specs])
        log.info("mcp.listed", server=entry.name, tools=[a.name for a in toolset.actions],
                 skipped=skipped)

    async def _list(self, entry: ServerEntry) -> tuple[list[ToolSpec] | None, str]:
        call_id = f"mcp-list-{entry.name}-{self._round}"
        lease = None
        try:
            lease = await self.broker.mint("mcp-list", call_id, entry.secret_refs(),
                                           list_timeout(entry) + GRACE_S)
            request = SandboxRequest(
                run_id="mcp-list", call_id=call_id, toolset=entry.name, action=LIST,
                config=entry.model_dump(mode="json"), secrets=dict(lease.values),
                egress=entry.endpoints(), mounts=list(entry.mounts),
                timeout=list_timeout(entry) + GRACE_S)
            outcome = await self.executor.run(request)
        except VaultError as e:
            return None, str(e)
        finally:
            if lease is not None:
                await self.broker.revoke(lease)
        result = outcome.result
        if result.status is not Status.OK:
            return None, result.error or result.status.value
        try:
            return [ToolSpec.model_validate(item) for item in result.data or []], ""
        except ValidationError:
            return None, f"the MCP server `{entry.name}` listed its tools in a malformed shape."


class Follower:
    """An ingress process's copy of the MCP toolsets, from the listings workers recorded."""

    NOT_LISTED = "no worker has listed its tools yet"

    def __init__(self, spec: MCPFile, catalog: Catalog, listings: Listings, every_s: float = 10):
        self.spec = spec
        self.catalog = catalog
        self.listings = listings
        self.every_s = every_s

    async def load(self) -> None:
        listed = await self.listings.all()
        for entry in self.spec.servers:
            if entry.name in listed:
                specs = [ToolSpec.model_validate(t) for t in listed[entry.name]]
                self.catalog.install(build_toolset(entry, specs), entry)
            elif entry.name not in self.catalog.toolsets:
                self.catalog.install(_unavailable(entry, self.NOT_LISTED), entry)

    async def follow(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.load()
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("mcp.follow_failed")


def _unavailable(entry: ServerEntry, problem: str) -> Toolset[ServerEntry]:
    toolset = build_toolset(entry, [])
    return Toolset(name=toolset.name, description=f"(unavailable: {problem})",
                   config=ServerEntry, actions=[], target=toolset.target,
                   egress=toolset.egress, secrets=toolset.secrets, mounts=toolset.mounts,
                   target_kinds=toolset.target_kinds)
