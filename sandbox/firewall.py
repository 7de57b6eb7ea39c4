"""iptables rules that confine an egress container to its forwarder ports.

An internal Docker network has no route out, but the container can still reach the host itself
through the bridge: the gateway IP and every other host address, so any service listening on
0.0.0.0 (a database, the Docker API on tcp, opsbot's own HTTP port). Each run's bridge is
named (``com.docker.network.bridge.name``) so rules can match it with ``-i``:

* ``ACCEPT`` to ``<gateway>:<port>`` for each of the run's forwarders, and ``REJECT`` to that
  port from anywhere else (another container, a host process): a forwarder serves its own
  network only;
* ``REJECT`` everything else arriving from the bridge (TCP with a reset, so a blocked connect
  fails at once with "Connection refused" instead of hanging).

All rules live in one chain per opsbot instance (``OPSBOT-<instance>``), jumped to from
``INPUT`` (traffic to the host) and ``DOCKER-USER`` (traffic Docker would forward), so a
restarted opsbot removes whatever its crashed predecessor left by flushing one chain. Without
iptables (not root, or a remote engine) the firewall is off and the runner logs a warning:
egress still works, but containers can reach host services on the bridge.
"""

from __future__ import annotations

import asyncio
import shutil

import structlog

log = structlog.get_logger(__name__)

PARENTS = ("INPUT", "DOCKER-USER")


class FirewallError(RuntimeError):
    """An iptables command failed while the firewall was on."""


class Firewall:
    def __init__(self, instance: str, enabled: bool = True):
        self.chain = f"OPSBOT-{instance}"[:28]
        self.enabled = enabled
        self.available = False

    async def start(self) -> bool:
        """Create (or empty) the instance chain and hook it in; False when unavailable."""
        if not self.enabled:
            return False
        if shutil.which("iptables") is None or shutil.which("iptables-restore") is None:
            log.warning("sandbox.firewall.unavailable", reason="iptables is not installed")
            return False
        code, out = await _iptables("-N", self.chain)
        if code != 0 and "exists" not in out:
            log.warning("sandbox.firewall.unavailable", reason=out.strip()[:200])
            return False
        self.available = True
        await self.reset()
        for parent in PARENTS:
            await self._hook(parent)
        return True

    async def _hook(self, parent: str) -> None:
        if (await _iptables("-C", parent, "-j", self.chain))[0] == 0:
            return
        code, out = await _iptables("-I", parent, "1", "-j", self.chain)
        if code != 0:
            log.info("sandbox.firewall.no_hook", parent=parent, reason=out.strip()[:200])

    async def confine(self, bridge: str, gateway: str, ports: list[int]) -> None:
        """Reject everything from ``bridge`` except TCP to ``gateway`` on ``ports``."""
        if not self.available:
            return
        lines = [rule for port in ports for rule in self._admit(bridge, gateway, port)]
        lines += [
            f"-A {self.chain} -i {bridge} -p tcp -j REJECT --reject-with tcp-reset",
            f"-A {self.chain} -i {bridge} -j REJECT --reject-with icmp-port-unreachable",
        ]
        await self._restore(lines)

    async def allow(self, bridge: str, gateway: str, ports: list[int]) -> None:
        """Open forwarder ports on an already confined bridge (warm pool networks)."""
        if self.available and ports:
            await self._restore([rule for port in ports
                                 for rule in self._admit(bridge, gateway, port)])

    def _admit(self, bridge: str, gateway: str, port: int) -> list[str]:
        target = f"-d {gateway}/32 -p tcp -m tcp --dport {port}"
        return [f"-I {self.chain} 1 -i {bridge} {target} -j ACCEPT",
                f"-I {self.chain} 1 ! -i {bridge} {target} -j REJECT --reject-with tcp-reset"]

    async def release(self, bridge: str) -> None:
        """Delete every rule of ``bridge``."""
        if not self.available:
            return
        code, out = await _iptables("-S", self.chain)
        mine = [line for line in out.splitlines() if f" -i {bridge} " in f"{line} "]
        if code == 0 and mine:
            await self._restore(["-D" + line[2:] for line in mine if line.startswith("-A ")])

    async def reset(self) -> None:
        """Remove every rule of this instance (what a crashed predecessor left)."""
        if self.available:
            await _iptables("-F", self.chain)

    async def close(self) -> None:
        if not self.available:
            return
        await self.reset()
        for parent in PARENTS:
            await _iptables("-D", parent, "-j", self.chain)
        await _iptables("-X", self.chain)
        self.available = False

    async def _restore(self, lines: list[str]) -> None:
        text = "*filter\n" + "\n".join(lines) + "\nCOMMIT\n"
        code, out = await _run(["iptables-restore", "-w", "--noflush"], text.encode())
        if code != 0:
            raise FirewallError(f"iptables-restore failed: {out.strip()[:300]}")


async def _iptables(*args: str) -> tuple[int, str]:
    return await _run(["iptables", "-w", *args])


async def _run(command: list[str], stdin: bytes | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(stdin)
    return proc.returncode or 0, out.decode(errors="replace")
