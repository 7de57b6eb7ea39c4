"""A real OpenSSH server (Debian's openssh-server) in a network namespace of its own.

The namespace gets one veth link to the host (``10.213.<n>.1`` here, ``10.213.<n>.2`` there),
so sshd listens on port 22 of an address nothing else uses, like a remote host; the sandbox
reaches it only through its egress forwarder. sshd trusts the session OpenBao's SSH CA
(``TrustedUserCAKeys``) and accepts, for the login user ``opsbot-ssh``, only the principals in
its principals file (``opsbot-observe`` and ``opsbot-sandbox-execute``: a tier-4 certificate is
refused here). Passwords, keyboard-interactive and authorized_keys are off. Needs root.

Usage::

    def test_x(sshd):
        sshd.known_hosts        # "10.213.7.2 ssh-ed25519 AAAA..." (the pinned host key)
        sshd.log()              # what sshd said (accepted/refused certificates)
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "opsbot-ssh"
PRINCIPALS = ("opsbot-observe", "opsbot-sandbox-execute")
SSHD = Path("/usr/sbin/sshd")
CONFIG = """\
ListenAddress {address}:22
HostKey {dir}/host_key
PidFile {dir}/sshd.pid
TrustedUserCAKeys {dir}/ca.pub
AuthorizedPrincipalsFile {dir}/principals/%u
AuthorizedKeysFile none
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
StrictModes no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
LogLevel VERBOSE
"""


@dataclass
class Sshd:
    address: str
    port: int
    user: str
    host_key: str  # "ssh-ed25519 AAAA..."
    workdir: Path

    @property
    def known_hosts(self) -> str:
        return f"{self.address} {self.host_key}\n"

    def log(self) -> str:
        return (self.workdir / "sshd.log").read_text(errors="replace")


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


def _login_user() -> None:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        _run("useradd", "--system", "--create-home", "--shell", "/bin/sh", USER)
    _run("usermod", "-p", "*", USER)  # no password, but not "locked" (sshd refuses locked ones)


def _namespace(name: str, octet: int) -> str:
    host_end, ns_end = f"vh{name[-8:]}", f"vn{name[-8:]}"
    _run("ip", "netns", "add", name)
    _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
    _run("ip", "link", "set", ns_end, "netns", name)
    _run("ip", "addr", "add", f"10.213.{octet}.1/30", "dev", host_end)
    _run("ip", "link", "set", host_end, "up")
    inside = ("ip", "netns", "exec", name, "ip")
    _run(*inside, "addr", "add", f"10.213.{octet}.2/30", "dev", ns_end)
    _run(*inside, "link", "set", ns_end, "up")
    _run(*inside, "link", "set", "lo", "up")
    return f"10.213.{octet}.2"


def _files(workdir: Path, address: str, ca: str) -> str:
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "host_key"))
    (workdir / "ca.pub").write_text(ca.strip() + "\n")
    (workdir / "principals").mkdir()
    (workdir / "principals" / USER).write_text("\n".join(PRINCIPALS) + "\n")
    (workdir / "sshd_config").write_text(CONFIG.format(address=address, dir=workdir, user=USER))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    return " ".join((workdir / "host_key.pub").read_text().split()[:2])


def _wait_listening(proc: subprocess.Popen[bytes], address: str, log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection((address, 22), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not listen on {address}:22:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def sshd(vault_engines) -> Iterator[Sshd]:
    if os.geteuid() != 0 or not SSHD.exists():
        pytest.fail("the sshd fixture needs root and openssh-server (scripts/install.sh)")
    _login_user()
    name, octet = f"obssh{secrets.token_hex(4)}", 1 + secrets.randbelow(250)
    workdir = Path(tempfile.mkdtemp(prefix="opsbot-sshd-"))
    workdir.chmod(0o755)  # sshd reads the principals file as the login user
    address = _namespace(name, octet)
    host_key = _files(workdir, address, vault_engines.ssh_ca)
    with (workdir / "sshd.log").open("wb") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", name, str(SSHD), "-D", "-e", "-f",
                                 str(workdir / "sshd_config")], stdout=log, stderr=log)
    try:
        _wait_listening(proc, address, workdir / "sshd.log")
        yield Sshd(address, 22, USER, host_key, workdir)
    finally:
        proc.terminate()
        proc.wait(10)
        subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
