"""Settings of the sandbox runner (built by the app's settings; this module reads no environment).

Usage::

    config = SandboxConfig(instance=new_instance(data_dir), docker_host=settings.docker_host,
                           image=settings.sandbox_image)
    runner = await SandboxRunner.start(config)
"""

from __future__ import annotations

import hashlib
import secrets
from ipaddress import IPv4Network
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, field_validator

from sandbox.egress import HOST_NAME

LOCAL_ENGINE = "unix:///var/run/docker.sock"


class SandboxConfig(BaseModel):
    """Limits and identity of the sandbox. Defaults suit a read-mostly connector action."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: str | None = Field(
        None, description="OPSBOT_SANDBOX_IMAGE: image to run; default is the tag of this code."
    )
    docker_host: str | None = Field(
        None, description="DOCKER_HOST: engine URL; default is the local engine's unix socket."
    )
    instance: str = Field(
        "default",
        pattern=r"^[a-z0-9][a-z0-9-]{0,19}$",
        description="Names this process's containers, networks and firewall chain; a runner "
        "reaps what dead instances on this host left, never a live sibling's (see "
        "new_instance and sandbox/instances.py).",
    )
    instances_dir: Path | None = Field(
        None, description="Where live instances hold their lock files (default: a host-wide "
        "directory, /run/opsbot/instances as root).")
    memory_mb: int = Field(256, ge=32, le=65536, description="Memory limit (no swap), MiB.")
    cpus: float = Field(1.0, gt=0, le=64, description="CPU quota in cores.")
    pids: int = Field(128, ge=16, le=32768, description="Maximum processes and threads.")
    tmpfs_mb: int = Field(64, ge=1, le=4096, description="Size of the /tmp scratch tmpfs, MiB.")
    output_cap_bytes: int = Field(
        1_000_000, ge=4096, description="Per stream; more stops the action and is cut."
    )
    default_timeout_s: float = Field(30.0, gt=0, description="Used when a request has none.")
    max_timeout_s: float = Field(900.0, gt=0, description="No request may run longer.")
    warm_pool: int = Field(
        2, ge=0, le=16, description="Pre-started containers kept ready per network kind."
    )
    warm_pool_max: int = Field(
        4, ge=0, le=32, description="Most pre-started containers per common kind when demand "
        "grows: the pool keeps as many ready as runs asked for in the last minute, at least "
        "warm_pool (0 keeps warm_pool fixed)."
    )
    preload: list[str] | None = Field(
        None, description="What a pooled container imports ahead: the toolsets the "
        "deployment configured (names, plus `shell` and `mcp`), with their client libraries; "
        "None: every connector (a box then costs ~0.85 s of CPU to start instead of ~0.25 s "
        "for one connector)."
    )
    spare_networks: int = Field(
        2, ge=0, le=16, description="Egress networks created ahead for cold boxes (a network "
        "costs the engine ~50 ms to create and nothing while it waits)."
    )
    housekeeping_delay_s: float = Field(
        0.25, ge=0, le=5, description="How long the engine work that follows an action "
        "(removing its exited container and network, renaming a taken pooled box, starting "
        "the pool's replacement) waits, so that it does not compete for the CPU with the "
        "checkpoints and the answer that follow the result. The box's forwarders close at "
        "once; the credentials are revoked at once (graph/cleanup.py)."
    )
    max_running: int = Field(
        8, ge=1, le=256, description="Actions running in containers at once in this process; "
        "more wait for a free slot (a model turn of 60 calls must not start 60 containers)."
    )
    slot_wait_s: float = Field(
        120.0, gt=0, description="How long an action waits for a free slot before it fails "
        "with a sentence saying opsbot is busy."
    )
    user: str = Field("65534:65534", pattern=r"^[1-9][0-9]*:[1-9][0-9]*$",
                      description="uid:gid inside the container; never root.")
    firewall: bool = Field(
        True, description="Add iptables rules so egress containers reach only their forwarders."
    )
    egress_subnets: IPv4Network = Field(
        IPv4Network("198.18.0.0/15"),
        description="Range carved into /28 networks, one per egress container. The default is "
        "the benchmarking range, which real hosts do not route; it also keeps egress networks "
        "out of Docker's small default address pools (about 30 networks).",
    )

    egress_hosts: dict[str, IPvAnyAddress] = Field(
        default_factory=dict,
        description="Host names the egress forwarders connect to at these addresses instead of "
        "asking DNS (like curl --resolve): split-horizon names, or a made-up name given to a "
        "local server in tests. The container still dials the name.",
    )

    @field_validator("egress_subnets")
    @classmethod
    def _room_for_networks(cls, value: IPv4Network) -> IPv4Network:
        if value.prefixlen > 24:
            raise ValueError("must be at least a /24 (it is split into /28 networks)")
        return value

    @field_validator("egress_hosts")
    @classmethod
    def _host_names(cls, value: dict[str, IPvAnyAddress]) -> dict[str, IPvAnyAddress]:
        bad = [name for name in value if not HOST_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"keys must be DNS names, got {', '.join(map(repr, bad))}")
        return value

    @property
    def upstreams(self) -> dict[str, str]:
        """``egress_hosts`` as the forwarders use it: name -> address text."""
        return {name: str(address) for name, address in self.egress_hosts.items()}

    @property
    def engine_url(self) -> str:
        return self.docker_host or LOCAL_ENGINE

    def timeout_for(self, requested: float | None) -> float:
        """The wall-clock limit for one request: its own, else the default, never over the max."""
        wanted = requested if requested and requested > 0 else self.default_timeout_s
        return min(wanted, self.max_timeout_s)


def new_instance(data_dir: str | Path) -> str:
    """A name for one opsbot process: ``i`` + 6 hex of its data directory (so a person can
    group them) + ``-`` + 6 random hex (so two processes never share one)."""
    resolved = str(Path(data_dir).expanduser().resolve())
    return f"i{hashlib.sha256(resolved.encode()).hexdigest()[:6]}-{secrets.token_hex(3)}"
