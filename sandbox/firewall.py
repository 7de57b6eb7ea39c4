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

Every iptables process is spawned from one worker thread, never from the event loop (a spawn
costs the calling thread ~0.5 ms of CPU and the exec waits on the xtables lock). The worker
also owns the record of which rules each bridge got, so :meth:`Firewall.release` deletes
exactly those in one ``iptables-restore`` without listing the chain first, and a change whose
awaiting task was cancelled is still recorded (jobs run in order, whatever the caller does).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import structlog

log = structlog.get_logger(__name__)

PARENTS = ("INPUT", "DOCKER-USER")
T = TypeVar("T")


class FirewallError(RuntimeError):
    """An iptables command failed while the firewall was on."""


class Firewall:
    def __init__(self, instance: str, enabled: bool = True):
        self.chain = f"OPSBOT-{instance}"[:28]
        self.enabled = enabled
        self.available = False
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-iptables")
        self._rules: dict[str, list[str]] = {}  # bridge -> its rules; worker thread only

    async def _job(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    async def start(self) -> bool:
        """Create (or empty) the instance chain and hook it in; False when unavailable."""
        if not self.enabled:
            return False
        if shutil.which("iptables") is None or shutil.which("iptables-restore") is None:
            log.warning("sandbox.firewall.unavailable", reason="iptables is not installed")
            return False
        code, out = await self._job(_iptables, "-N", self.chain)
        if code != 0 and "exists" not in out:
            log.warning("sandbox.firewall.unavailable", reason=out.strip()[:200])
            return False
        self.available = True
        if code != 0:  # the chain was there already (a crashed predecessor's): empty it
            await self.reset()
        for parent in PARENTS:
            if problem := await self._job(self._hook, parent):
                log.info("sandbox.firewall.no_hook", parent=parent, reason=problem)
        return True

    def _hook(self, parent: str) -> str | None:
        if _iptables("-C", parent, "-j", self.chain)[0] == 0:
            return None
        code, out = _iptables("-I", parent, "1", "-j", self.chain)
        return out.strip()[:200] if code != 0 else None

    async def confine(self, bridge: str, gateway: str, ports: list[int]) -> None:
        """Reject everything from ``bridge`` except TCP to ``gateway`` on ``ports``."""
        if not self.available:
            return
        lines = [rule for port in ports for rule in self._admit(bridge, gateway, port)]
        lines += [
            f"-A {self.chain} -i {bridge} -p tcp -j REJECT --reject-with tcp-reset",
            f"-A {self.chain} -i {bridge} -j REJECT --reject-with icmp-port-unreachable",
        ]
        await self._job(self._add, bridge, lines)

    async def allow(self, bridge: str, gateway: str, ports: list[int]) -> None:
        """Open forwarder ports on an already confined bridge (warm pool networks)."""
        if self.available and ports:
            lines = [rule for port in ports for rule in self._admit(bridge, gateway, port)]
            await self._job(self._add, bridge, lines)

    def _admit(self, bridge: str, gateway: str, port: int) -> list[str]:
        target = f"-d {gateway}/32 -p tcp -m tcp --dport {port}"
        return [f"-I {self.chain} 1 -i {bridge} {target} -j ACCEPT",
                f"-I {self.chain} 1 ! -i {bridge} {target} -j REJECT --reject-with tcp-reset"]

    def _add(self, bridge: str, lines: list[str]) -> None:
        _restore(lines)
        self._rules.setdefault(bridge, []).extend(lines)

    async def release(self, bridge: str) -> None:
        """Delete every rule of ``bridge``."""
        if self.available:
            await self._job(self._remove, bridge)

    def _remove(self, bridge: str) -> None:
        if lines := self._rules.pop(bridge, []):
            _restore([_deletion(line) for line in lines])

    async def reset(self) -> None:
        """Remove every rule of this instance (what a crashed predecessor left)."""
        if self.available:
            await self._job(self._flush)

    def _flush(self) -> None:
        _iptables("-F", self.chain)
        self._rules.clear()

    async def close(self) -> None:
        if self.available:
            await self.reset()
            for parent in PARENTS:
                await self._job(_iptables, "-D", parent, "-j", self.chain)
            await self._job(_iptables, "-X", self.chain)
            self.available = False
        self._worker.shutdown(wait=False)


async def chains() -> dict[str, str]:
    """Every opsbot chain on this host: instance -> chain (a chain can outlive its containers)."""
    if shutil.which("iptables") is None:
        return {}
    code, out = await asyncio.to_thread(_iptables, "-S")
    names = [line.split()[1] for line in out.splitlines() if line.startswith("-N OPSBOT-")]
    return {name.removeprefix("OPSBOT-"): name for name in names} if code == 0 else {}


async def drop(chain: str) -> None:
    """Remove a dead instance's chain: its rules, the jumps to it, the chain itself."""
    def work() -> None:
        _iptables("-F", chain)
        for parent in PARENTS:
            while _iptables("-D", parent, "-j", chain)[0] == 0:
                pass
        _iptables("-X", chain)

    await asyncio.to_thread(work)


def _deletion(line: str) -> str:
    """``-D`` for a rule as it was added with ``-A chain ...`` or ``-I chain 1 ...``."""
    verb, chain, *rest = line.split(" ")
    if verb == "-I":
        rest = rest[1:]
    return " ".join(["-D", chain, *rest])


def _restore(lines: list[str]) -> None:
    text = "*filter\n" + "\n".join(lines) + "\nCOMMIT\n"
    code, out = _run(["iptables-restore", "-w", "--noflush"], text.encode())
    if code != 0:
        raise FirewallError(f"iptables-restore failed: {out.strip()[:300]}")


def _iptables(*args: str) -> tuple[int, str]:
    return _run(["iptables", "-w", *args])


def _run(command: list[str], stdin: bytes | None = None) -> tuple[int, str]:
    """Blocking: call it through ``Firewall._job`` only."""
    done = subprocess.run(command, input=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, check=False,
                          stdin=None if stdin is not None else subprocess.DEVNULL)
    return done.returncode, done.stdout.decode(errors="replace")
