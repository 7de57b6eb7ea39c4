"""Hostile programs in the hardened container: each must be contained and reported clearly.

Every case goes through ``SandboxRunner.execute``, the code path of production runs, with a
Python program in place of the entrypoint; the program gets the request (with its egress
``endpoints``) on stdin like the entrypoint does. A program that gets what it wanted prints an
``ESCAPED`` result (status ok), so an escape fails the test instead of passing silently.

The image is the sandbox image plus one setuid-root copy of ``id``: without
``no-new-privileges`` it reports ``euid=0`` (checked by hand, see sandbox/README.md).
"""

from __future__ import annotations

import io
import ipaddress
import os
import socket
from dataclasses import dataclass, field

import docker
import pytest

from sandbox.config import SandboxConfig
from sandbox.protocol import SandboxOutcome, SandboxRequest
from sandbox.runner import SandboxRunner
from tests.services.docker import leftovers, session_instance
from tools.base import Endpoint, Status

pytestmark = pytest.mark.docker

HOST_CANARY = "OPSBOT_TEST_HOST_CANARY"
PRELUDE = """
import json, os, socket, subprocess, sys, time
REQ = json.loads(sys.stdin.read())
CFG = REQ["config"]
def escaped(what):
    print(json.dumps({"status": "ok", "invocation": "escape", "output": "ESCAPED: " + what}))
    sys.exit(0)
def gateway():
    return next(iter(REQ["endpoints"].values())).rpartition(":")[0]
def connect(host, port):
    socket.create_connection((host, port), timeout=5).close()
    escaped(f"connected to {host}:{port}")
"""


# A name the host's own resolver answers (probe_config picks one), asked for from an egress
# container through libc and straight at Docker's embedded resolver (127.0.0.11), which a
# hostile program can reach whatever /etc/resolv.conf says. Any address back is an escape:
# queries that resolve are queries that left (CVE-2024-29018).
DNS_PROBE = """
import struct
name = CFG['resolvable_name']
try:
    socket.getaddrinfo(name, 443)
    escaped(f'libc resolved {name}')
except socket.gaierror:
    pass
labels = b''.join(bytes([len(p)]) + p.encode() for p in name.split('.'))
header = struct.pack('>6H', 0x0b5b, 0x0100, 1, 0, 0, 0)  # one recursive question
query = header + labels + b'\\0' + struct.pack('>2H', 1, 1)  # A, IN
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.settimeout(3)
probe.sendto(query, ('127.0.0.11', 53))
try:
    reply = probe.recv(4096)
    if struct.unpack('>H', reply[6:8])[0]:
        escaped(f'the embedded resolver answered for {name}')
except OSError:
    pass
sys.exit(f'no resolver answered for {name}')
"""


@dataclass
class Case:
    program: str
    expect: tuple[str, ...]
    egress: bool = False
    timeout: float = 10.0
    flags: dict[str, bool] = field(default_factory=dict)


REFUSED = ("Connection refused",)
UNREACHABLE = ("Connection refused", "Network is unreachable", "No route to host")
READ_ONLY = ("Read-only file system", "Permission denied")

CASES = {
    "tcp-gateway-other-port": Case("connect(gateway(), CFG['listener_port'])", REFUSED, True),
    "tcp-host-address": Case("connect(CFG['host_ip'], CFG['listener_port'])", REFUSED, True),
    "tcp-docker0": Case("connect(CFG['docker0'], CFG['listener_port'])", REFUSED, True),
    "tcp-declared-endpoint-directly": Case("connect('127.0.0.1', CFG['redis_port'])", REFUSED,
                                           True),
    "tcp-internet": Case("connect('1.1.1.1', 443)", UNREACHABLE, True),
    "tcp-without-egress": Case("connect(CFG['docker0'], CFG['listener_port'])",
                               ("Network is unreachable",)),
    "ipv6-to-the-host": Case(
        "if open('/proc/net/if_inet6').read().strip(): escaped('has IPv6 addresses')\n"
        "s = socket.socket(socket.AF_INET6); s.settimeout(5)\n"
        "s.connect(('fe80::1', CFG['listener_port'], 0, 2)); escaped('IPv6 connect')",
        ("Cannot assign requested address",), True),
    "dns-undeclared-name": Case(DNS_PROBE, ("no resolver answered",), True),
    "write-root": Case("open('/owned', 'w'); escaped('wrote /')", READ_ONLY),
    "write-etc": Case("open('/etc/passwd', 'a'); escaped('wrote /etc')", READ_ONLY),
    "write-usr": Case("open('/usr/bin/python3', 'ab'); escaped('wrote /usr')", READ_ONLY),
    "write-var-tmp": Case("open('/var/tmp/x', 'w'); escaped('wrote /var/tmp')",
                          ("Read-only file system",)),
    "exec-from-tmp": Case(
        "open('/tmp/x.sh', 'w').write('#!/bin/sh\\necho hi\\n'); os.chmod('/tmp/x.sh', 0o755);"
        "subprocess.run(['/tmp/x.sh'], check=True); escaped('ran /tmp/x.sh')",
        ("Permission denied",)),
    "fill-tmpfs": Case("f = open('/tmp/big', 'wb')\nfor _ in range(64): f.write(b'0' * (1 << 20))"
                       "\nf.flush(); escaped('wrote 64 MiB to /tmp')",
                       ("No space left on device",)),
    "fork-bomb": Case(
        "n = 0\nwhile n < 5000:\n    if os.fork() == 0:\n        time.sleep(30); os._exit(0)\n"
        "    n += 1\nescaped(f'{n} processes')", ("Resource temporarily unavailable",)),
    "memory": Case("hog = b'x' * (512 << 20); escaped('allocated 512 MiB')",
                   ("ran out of memory (128 MiB limit) and was killed",)),
    "sleep-past-timeout": Case("time.sleep(60); escaped('slept')",
                               ("timed out after 2 s and was killed",), timeout=2,
                               flags={"timed_out": True}),
    "print-100-mb": Case("for _ in range(100): sys.stdout.write('x' * 1_000_000)",
                         ("output exceeded 1 MB; it was cut and the action was stopped",),
                         flags={"output_truncated": True}),
    "host-environment": Case(
        f"env = os.environ.get({HOST_CANARY!r})\n"
        "blobs = [open(f'/proc/{p}/environ', 'rb').read() for p in os.listdir('/proc') "
        "if p.isdigit()]\n"
        f"if env or any({HOST_CANARY!r}.encode() in b for b in blobs): escaped('host env')\n"
        "sys.exit('no host environment visible')", ("no host environment visible",)),
    "docker-socket": Case(
        "for path in ('/var/run/docker.sock', '/run/docker.sock'):\n"
        "    s = socket.socket(socket.AF_UNIX); s.connect(path); escaped(path)",
        ("No such file or directory",)),
    "setuid-binary": Case(
        "out = subprocess.run(['/usr/local/bin/suid-id'], capture_output=True, text=True).stdout\n"
        "if 'euid=0' in out or 'uid=0' in out: escaped(out)\nos.setuid(0); escaped('setuid(0)')",
        ("Operation not permitted",)),
    "raw-socket-capability": Case(
        "status = open('/proc/self/status').read()\n"
        "if 'CapEff:\\t0000000000000000' not in status: escaped('has capabilities')\n"
        "socket.socket(socket.AF_PACKET, socket.SOCK_RAW); escaped('raw socket')",
        ("Operation not permitted",)),
}


def primary_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent; picks the outbound address
        return probe.getsockname()[0]


def resolvable_name() -> str:
    """A name this host's resolver answers, so that failing in the container means something
    (without one, any name is as good: nothing can resolve it anywhere)."""
    for name in ("deb.debian.org", "pypi.org", "example.com"):
        try:
            socket.getaddrinfo(name, 443)
            return name
        except OSError:
            continue
    return "example.com"


@pytest.fixture(scope="module")
def hostile_image(docker_client: docker.DockerClient, sandbox_image: str) -> str:
    tag = sandbox_image.replace("opsbot-sandbox:", "opsbot-sandbox-hostile:")
    dockerfile = (f"FROM {sandbox_image}\nUSER root\nRUN cp /usr/bin/id /usr/local/bin/suid-id "
                  "&& chmod 4755 /usr/local/bin/suid-id\nUSER 65534:65534\n")
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag,
                               network_mode="none", rm=True)
    return tag


@pytest.fixture(scope="module")
async def hostile_runner(hostile_image):
    config = SandboxConfig(instance=session_instance("-h"), image=hostile_image,
                           memory_mb=128, pids=64, tmpfs_mb=16, warm_pool=0)
    runner = await SandboxRunner.start(config)
    yield runner
    await runner.close()


@pytest.fixture
def probe_config(host_listener, redis_server, docker_client, monkeypatch) -> dict:
    monkeypatch.setenv(HOST_CANARY, "host-secret-value")
    subnet = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Subnet"]
    bridge = str(next(ipaddress.ip_network(subnet).hosts()))  # docker0's address on the host
    return {"listener_port": host_listener, "host_ip": primary_ip(), "docker0": bridge,
            "redis_port": redis_server.port, "resolvable_name": resolvable_name()}


@pytest.mark.parametrize("name", list(CASES))
async def test_hostile_program_is_contained(name, hostile_runner, probe_config, redis_server,
                                            docker_client):
    case = CASES[name]
    egress = [Endpoint(host=redis_server.host, port=redis_server.port)] if case.egress else []
    request = SandboxRequest(run_id="containment", call_id=name, toolset="hostile", action=name,
                             config=probe_config, egress=egress, timeout=case.timeout)
    outcome: SandboxOutcome = await hostile_runner.execute(
        request, ["python3", "-c", PRELUDE + case.program], None
    )
    assert outcome.result.status is Status.ERROR, outcome.result.output
    assert any(phrase in (outcome.result.error or "") for phrase in case.expect), (
        outcome.result.error, outcome.diagnostics)
    for flag, value in case.flags.items():
        assert getattr(outcome, flag) is value
    assert (outcome.network == "none") is not case.egress, outcome.network  # egress: own network
    await hostile_runner.settle()
    assert leftovers(docker_client, name) == []
    assert os.environ[HOST_CANARY] == "host-secret-value"
