"""OpenBao's database and SSH engines, set up by the script the README tells operators to run.

``deploy/vault/dynamic-credentials.sh`` runs once per session against the session OpenBao with
a Redis of its own (``requirepass``: without it the ``default`` user lets anyone in, and a
dynamic ACL user would prove nothing) and the session PostgreSQL. Tests then mint through the
roles it created (``opsbot-redis-read`` ...) exactly as a deployment would.

Usage::

    def test_user(vault_engines):
        vault_engines.redis_admin().execute_command("ACL", "USERS")
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from sandbox.credentials import PARENT_POLICY
from tests.services.openbao import OpenBaoServer, bao_binary
from tests.services.redis import RedisServer, private_redis

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "vault" / "dynamic-credentials.sh"
REDIS_READ, REDIS_WRITE = "database/creds/opsbot-redis-read", "database/creds/opsbot-redis-write"
PG_READ, PG_WRITE = "database/creds/opsbot-postgres-read", "database/creds/opsbot-postgres-write"
SSH_SIGN = "ssh/sign/opsbot"


@dataclass
class VaultEngines:
    openbao: OpenBaoServer
    redis: RedisServer  # requirepass; ``redis.password`` is the admin's
    postgres_dsn: str  # the superuser's (trust); dynamic roles log in with passwords
    ssh_ca: str  # the SSH engine's CA public key, for sshd's TrustedUserCAKeys

    def redis_admin(self) -> redis.Redis:
        return self.redis.client()

    def redis_users(self) -> list[str]:
        with self.redis_admin() as admin:
            return list(admin.execute_command("ACL", "USERS"))

    def pg_roles(self) -> list[str]:
        with psycopg.connect(self.postgres_dsn) as conn:
            return [r[0] for r in conn.execute("select rolname from pg_roles")]

    def parent_token(self, ttl: str = "1h") -> str:
        """A token holding only opsbot's documented parent policy (what an operator issues)."""
        root = self.openbao.client()
        root.sys.create_or_update_acl_policy("opsbot-parent", PARENT_POLICY)
        return root.auth.token.create(policies=["opsbot-parent"], ttl=ttl)["auth"]["client_token"]

    def pg_url(self, database: str = "postgres") -> str:
        """The connector's URL for a database of the session server (no password in it)."""
        host, port = self.pg_host_port
        return f"postgresql://{host}:{port}/{database}?sslmode=disable"

    @property
    def pg_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.postgres_dsn)
        return parts.hostname or "127.0.0.1", parts.port or 5432


def run_setup(openbao: OpenBaoServer, env: dict[str, str]) -> str:
    """Run the operator's set-up script with the OpenBao CLI; returns its stdout."""
    full = {**{k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))},
            "VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token,
            "VAULT_CLI": bao_binary(), **env}
    done = subprocess.run([str(SCRIPT)], env=full, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"{SCRIPT.name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


@pytest.fixture(scope="session")
def acl_redis(tmp_path_factory) -> Iterator[RedisServer]:
    """A Redis whose ``default`` user needs a password: only ACL users get in otherwise."""
    with private_redis(tmp_path_factory.mktemp("acl-redis"), secrets.token_hex(16)) as server:
        yield server


@pytest.fixture(scope="session")
def vault_engines(openbao, acl_redis, postgres_dsn) -> VaultEngines:
    pg = urlsplit(postgres_dsn)
    ca = run_setup(openbao, {
        "REDIS_HOST": acl_redis.host, "REDIS_PORT": str(acl_redis.port),
        "REDIS_ADMIN_PASSWORD": acl_redis.password or "",
        "POSTGRES_HOST": pg.hostname or "", "POSTGRES_PORT": str(pg.port),
        "POSTGRES_ADMIN_USER": "postgres", "POSTGRES_ADMIN_PASSWORD": "trusted-on-loopback",
        "POSTGRES_SSLMODE": "disable", "OPSBOT_SSH": "1",
    })
    return VaultEngines(openbao, acl_redis, postgres_dsn, ca.strip())
