"""Which opsbot sandbox instances on this host are alive.

Every running :class:`~sandbox.runner.SandboxRunner` holds an exclusive ``flock`` on
``<dir>/<instance>.lock`` for as long as its process lives; the kernel drops the lock when the
process dies, however it dies. So at start a runner can tell a live sibling (reap nothing of
it) from a dead one (reap its containers, networks and firewall chain), without a database and
without trusting process ids.

Usage::

    instances = Instances(default_dir())
    if not instances.claim("i3f2a9c-5b1d0e"): ...     # another live process uses this name
    instances.alive("i77aa01-0c9e4f")                 # False once its process is gone
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import tempfile
from pathlib import Path

HOST = socket.gethostname()
NAME = re.compile(r"i[0-9a-f]{6}-[0-9a-f]{6}")


class InstanceInUse(RuntimeError):
    """Another live process on this host runs a sandbox under the same instance name."""


def default_dir() -> Path:
    """Host-wide, so processes with different data directories still see each other."""
    if os.geteuid() == 0:
        return Path("/run/opsbot/instances")
    return Path(tempfile.gettempdir()) / f"opsbot-instances-{os.geteuid()}"


class Instances:
    def __init__(self, directory: Path):
        self.directory = directory
        self._held: dict[str, int] = {}  # instance -> fd of its lock file, while we hold it

    def claim(self, instance: str) -> bool:
        """Hold ``instance``'s lock for this process; False when a live process holds it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path(instance), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {HOST}\n".encode())
        self._held[instance] = fd
        return True

    def release(self, instance: str) -> None:
        fd = self._held.pop(instance, None)
        if fd is not None:
            self._path(instance).unlink(missing_ok=True)
            os.close(fd)

    def alive(self, instance: str) -> bool:
        """True while some process (this one included) holds ``instance``'s lock."""
        if instance in self._held:
            return True
        try:
            fd = os.open(self._path(instance), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a lock we just took
        return False

    def dead(self, instance: str) -> bool:
        """True only for an instance known to have lived here (its lock file exists, or its
        name is one :func:`sandbox.config.new_instance` makes) whose lock nobody holds. Names
        from elsewhere (another host's engine, a test session) are left to their owners."""
        known = self._path(instance).exists() or NAME.fullmatch(instance) is not None
        return known and not self.alive(instance)

    def died_here(self, instance: str) -> bool:
        """True for an instance that ran on this host (its lock file is here; files stay
        after a crash) and has died: what it left open anywhere (credential leases) is ours
        to end."""
        return self._path(instance).exists() and not self.alive(instance)

    def _path(self, instance: str) -> Path:
        return self.directory / f"{instance}.lock"
