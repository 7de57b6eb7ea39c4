"""The one description of a sandbox container: hardening, limits and labels (pure data).

Every container the runner creates, cold or pre-started for the warm pool, whether it runs the
production entrypoint or a test's hostile program, comes from :func:`container_spec`, so the
containment tests exercise exactly the production settings.

Why each setting (see also sandbox/README.md):

* ``network_mode``: ``none``, or the run's own *internal* network whose only reachable host
  ports are the egress forwarders (firewall.py);
* ``read_only`` + a ``noexec,nosuid`` tmpfs ``/tmp`` with a size cap: nothing persists, nothing
  downloaded can be executed from scratch space;
* non-root user, ``cap_drop=ALL``, ``no-new-privileges`` (setuid binaries cannot raise
  privileges; the image strips the setuid bits too);
* memory (swap disabled), CPU, pids, open files and core dumps (0: no memory image with
  credentials on disk) limited;
* ``log_config=none``: Docker keeps no copy of the output (results may quote sensitive data);
* ``dns``: no usable resolver. On the run's network Docker's embedded resolver (127.0.0.11)
  answers the container and forwards every other name to the container's ``dns`` servers, by
  default the host's (Docker before 26 forwards from the host's namespace when that resolver
  is on loopback, CVE-2024-29018: a DNS exfiltration path around the firewall). Its only
  upstream is :data:`NO_RESOLVER`, an address that is never routed, so nothing that is not in
  the hosts file resolves, by any path (the hosts file answers first: ``hosts: files dns``);
* ``dns_opt``: name lookups fail in a second instead of hanging (nothing outside resolves);
* ``extra_hosts``: the declared endpoint names that resolve to the run's gateway, where their
  forwarders listen (egress.py); nothing else resolves;
* ``binds``: only the host directories the operator declared for the toolset (an MCP git
  server's checkout), read-only unless declared writable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from docker.types import LogConfig, Ulimit

from sandbox.config import SandboxConfig
from tools.base import Mount
from sandbox.instances import HOST

LABEL = "opsbot"
NO_RESOLVER = "192.0.2.1"  # TEST-NET-1 (RFC 5737): documentation only, routed nowhere
ENTRYPOINT: list[str] | None = None  # the image's CMD: python3 -m sandbox.entrypoint
POOLED = ["python3", "-m", "sandbox.entrypoint", "--preload"]  # same, libraries imported early


def pooled(preload: Sequence[str] | None) -> tuple[str, ...]:
    """A common pooled box's command: importing ``preload``'s connectors ahead (None: all)."""
    return (*POOLED, ",".join(preload)) if preload is not None else tuple(POOLED)


@dataclass(frozen=True)
class Identity:
    """Who a container or network belongs to; becomes its labels (and reaping key)."""

    instance: str
    run_id: str = ""
    call_id: str = ""
    action: str = ""
    pool: str = ""

    def labels(self) -> dict[str, str]:
        labels = {
            LABEL: "1",
            f"{LABEL}.instance": self.instance,
            f"{LABEL}.host": HOST,
            f"{LABEL}.run_id": self.run_id,
            f"{LABEL}.call_id": self.call_id,
            f"{LABEL}.action": self.action,
        }
        if self.pool:
            labels[f"{LABEL}.pool"] = self.pool
        return labels


@dataclass(frozen=True)
class ContainerSpec:
    """Arguments for ``APIClient.create_container`` and ``create_host_config``."""

    create: dict[str, Any]
    host: dict[str, Any] = field(default_factory=dict)


def instance_filter(instance: str) -> dict[str, list[str]]:
    return {"label": [f"{LABEL}.instance={instance}"]}


def container_spec(
    config: SandboxConfig,
    image: str,
    identity: Identity,
    name: str,
    network: str = "none",
    command: list[str] | None = ENTRYPOINT,
    hosts: Mapping[str, str] | None = None,
    mounts: Sequence[Mount] = (),
) -> ContainerSpec:
    """``hosts``: extra ``/etc/hosts`` entries, name -> address; ``mounts``: declared host
    directories."""
    create = {
        "image": image,
        "command": command,
        "name": name,
        "user": config.user,
        "labels": identity.labels(),
        "stdin_open": True,
        "detach": False,  # with stdin_open: StdinOnce, so closing our stdin closes theirs
        "tty": False,
        "hostname": "sandbox",
        "working_dir": "/tmp",
        "environment": {},
    }
    host = host_settings(config, network)
    if hosts:
        host["extra_hosts"] = dict(hosts)
    if mounts:
        create["volumes"] = [m.target for m in mounts]
        host["binds"] = {m.source: {"bind": m.target, "mode": "rw" if m.writable else "ro"}
                         for m in mounts}
    return ContainerSpec(create=create, host=host)


def host_settings(config: SandboxConfig, network: str) -> dict[str, Any]:
    memory = f"{config.memory_mb}m"
    return {
        "network_mode": network,
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,noexec,nosuid,nodev,size={config.tmpfs_mb}m,mode=1777"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "privileged": False,
        "mem_limit": memory,
        "memswap_limit": memory,
        "nano_cpus": int(config.cpus * 1e9),
        "pids_limit": config.pids,
        "ulimits": [Ulimit(name="core", soft=0, hard=0),
                    Ulimit(name="nofile", soft=1024, hard=1024)],
        "log_config": LogConfig(type="none"),
        "ipc_mode": "private",
        "dns": [NO_RESOLVER],
        "dns_opt": ["timeout:1", "attempts:1"],
    }
