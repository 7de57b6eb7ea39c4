"""Inside the sandbox: the few Docker Engine API calls the connector makes, through opsbot's
filtering proxy (plain HTTP to the egress forwarder, the action's token in a header), and the
renderings of what comes back (multiplexed log frames, a stats sample).
"""

from __future__ import annotations

import struct
from typing import Any

import requests

API_VERSION = "v1.41"
MAX_BYTES = 4_000_000
TOKEN_HEADER = "X-Opsbot-Token"


class DockerAPIError(RuntimeError):
    """The proxy or the engine said no; ``str(e)`` is their message."""


class DockerAPI:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token

    def get(self, path: str, query: dict[str, str] | None = None) -> Any:
        return _json(self.raw("GET", path, query))

    def raw(self, method: str, path: str, query: dict[str, str] | None = None) -> bytes:
        response = requests.request(method, f"{self.base}/{API_VERSION}{path}", params=query,
                                    headers={TOKEN_HEADER: self.token}, timeout=60, stream=True)
        body = response.raw.read(MAX_BYTES, decode_content=True)
        response.close()
        if response.status_code >= 400:
            raise DockerAPIError(f"{method} {path}: {response.status_code} {_message(body)}")
        return body


def _json(body: bytes) -> Any:
    import json

    return json.loads(body or b"null")


def _message(body: bytes) -> str:
    try:
        return str(_json(body).get("message", ""))[:300]
    except (ValueError, AttributeError):
        return body[:300].decode(errors="replace")


def log_text(raw: bytes, tty: bool) -> str:
    """Docker's log stream as text: raw for a TTY container, else 8-byte-framed stdout/stderr."""
    if tty:
        return raw.decode(errors="replace").rstrip("\n")
    out, offset = [], 0
    while offset + 8 <= len(raw):
        stream, size = raw[offset], struct.unpack(">I", raw[offset + 4:offset + 8])[0]
        chunk = raw[offset + 8:offset + 8 + size].decode(errors="replace")
        out.append(chunk if stream != 2 else "".join(f"[stderr] {line}"
                                                     for line in chunk.splitlines(True)))
        offset += 8 + size
    return "".join(out).rstrip("\n")


def describe_stats(body: dict[str, Any]) -> str:
    cpu, pre = body.get("cpu_stats") or {}, body.get("precpu_stats") or {}
    used = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get(
        "total_usage", 0)
    system = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    cpus = cpu.get("online_cpus") or 1
    percent = used / system * cpus * 100 if system > 0 else 0.0
    memory = body.get("memory_stats") or {}
    networks = body.get("networks") or {}
    rx = sum(n.get("rx_bytes", 0) for n in networks.values())
    tx = sum(n.get("tx_bytes", 0) for n in networks.values())
    return (f"CPU {percent:.1f}% of {cpus} CPU(s); memory {_mib(memory.get('usage'))} of "
            f"{_mib(memory.get('limit'))}; network in {_mib(rx)}, out {_mib(tx)}; "
            f"pids {(body.get('pids_stats') or {}).get('current', '?')}")


def _mib(value: Any) -> str:
    return f"{(value or 0) / 1048576:.1f} MiB"
