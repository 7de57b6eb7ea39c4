"""Dynamic credentials against real OpenBao engines, a real Redis (ACL) and a real PostgreSQL.

The engines are set up by ``deploy/vault/dynamic-credentials.sh`` (the script the README gives
operators), and the broker holds a token with exactly ``PARENT_POLICY``, never root. Whether a
user exists is asked of the database itself (``ACL USERS``, ``pg_roles``) over a second
connection, and whether a password still works by logging in with it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pytest
import redis
from pydantic import SecretStr

from graph.leases import revoke_orphaned
from graph.records.sqlite import SqliteRecords
from sandbox.credentials import CredentialBroker, Lease, VaultConfig, VaultError
from sandbox.protocol import SandboxRequest
from tests.fakes.server import wait_until
from tests.services.vault_engines import (
    PG_READ,
    PG_WRITE,
    REDIS_READ,
    REDIS_WRITE,
    SSH_SIGN,
    VaultEngines,
)
from tools import TOOLSETS
from tools.base import SecretKind, SecretRef
from tools.catalog import Call, Catalog
from tools.redis import RedisConfig
from tools.secrets import REDACTOR

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Engine:
    """One database behind the Vault database engine, seen from the outside."""

    role: str
    users: Callable[[VaultEngines], list[str]]
    login: Callable[[VaultEngines, str, str], None]  # raises when the password is refused
    refused: type[Exception]


def redis_login(engines: VaultEngines, user: str, password: str) -> None:
    with redis.Redis(host=engines.redis.host, port=engines.redis.port, username=user,
                     password=password) as client:
        client.ping()


def pg_login(engines: VaultEngines, user: str, password: str) -> None:
    host, port = engines.pg_host_port
    psycopg.connect(host=host, port=port, dbname="postgres", user=user, password=password,
                    connect_timeout=5).close()


REDIS = Engine(REDIS_READ, VaultEngines.redis_users, redis_login, redis.AuthenticationError)
POSTGRES = Engine(PG_READ, VaultEngines.pg_roles, pg_login, psycopg.OperationalError)
ENGINES = {"redis": REDIS, "postgres": POSTGRES}


@pytest.fixture(scope="module")
def config(vault_engines) -> VaultConfig:
    return VaultConfig(addr=vault_engines.openbao.addr,
                       token=SecretStr(vault_engines.parent_token()), ttl_margin_s=1)


@pytest.fixture
def broker(config) -> CredentialBroker:
    return CredentialBroker(config, instance="test-dynamic")


def login_of(lease: Lease, prefix: str) -> tuple[str, str]:
    return (lease.values[f"{prefix}_username"].get_secret_value(),
            lease.values[f"{prefix}_password"].get_secret_value())


@pytest.mark.parametrize("engine", ENGINES.values(), ids=ENGINES.keys())
async def test_the_user_exists_while_the_action_runs_and_is_gone_after(vault_engines, broker,
                                                                       engine):
    lease = await broker.mint("run-dyn", "c1", SecretRef.login("db", engine.role), 30)
    user, password = login_of(lease, "db")
    assert user in engine.users(vault_engines)  # a second connection sees it
    engine.login(vault_engines, user, password)
    await broker.revoke(lease)
    assert lease.revoke_error is None and lease.revoked_at is not None
    assert user not in engine.users(vault_engines)  # gone when revoke returns, not later
    with pytest.raises(engine.refused):
        engine.login(vault_engines, user, password)


async def test_the_lease_is_audited_with_its_vault_lease_role_and_ttl(vault_engines, broker):
    lease = await broker.mint("run-aud", "c1", SecretRef.login("redis", REDIS_READ), 20)
    _, password = login_of(lease, "redis")
    minted = lease.audit()
    await broker.revoke(lease)
    revoked = lease.audit()
    [grant] = minted["grants"]
    assert grant["kind"] == "database" and grant["role"] == "opsbot-redis-read"
    assert grant["lease_id"].startswith(f"{REDIS_READ}/")
    assert grant["ttl_s"] == minted["ttl_s"] == 21  # the token's TTL caps the role's 10 minutes
    assert minted["lease"] == revoked["lease"] and minted["revoked_at"] is None
    assert revoked["revoked_at"] is not None and revoked["grants"][0]["revoked_at"] is not None
    assert minted["num_uses"] == 2  # one read and one spare: a spent token revokes its leases
    assert password not in json.dumps([minted, revoked])


async def test_a_read_role_cannot_write_and_a_write_role_can(vault_engines, broker):
    read = await broker.mint("run-rw", "r", SecretRef.login("redis", REDIS_READ), 30)
    write = await broker.mint("run-rw", "w", SecretRef.login("redis", REDIS_WRITE), 30)
    try:
        with _redis(vault_engines, read) as client:
            assert client.info("server")["redis_version"]  # reads, INFO included
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.set("dyn:key", "x")
        with _redis(vault_engines, write) as client:
            assert client.set("dyn:key", "x") and client.delete("dyn:key") == 1
    finally:
        await asyncio.gather(broker.revoke(read), broker.revoke(write))


def _redis(engines: VaultEngines, lease: Lease) -> redis.Redis:
    user, password = login_of(lease, "redis")
    return redis.Redis(host=engines.redis.host, port=engines.redis.port, username=user,
                       password=password)


async def test_a_postgres_read_role_cannot_write(vault_engines, broker):
    lease = await broker.mint("run-pgw", "c", SecretRef.login("pg", PG_READ), 30)
    user, password = login_of(lease, "pg")
    host, port = vault_engines.pg_host_port
    try:
        with psycopg.connect(host=host, port=port, dbname="postgres", user=user,
                             password=password, autocommit=True) as conn:
            assert conn.execute("select count(*) from pg_stat_activity").fetchone()[0] >= 1
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("create table dyn_write (x int)")
    finally:
        await broker.revoke(lease)


async def test_revoke_ends_sessions_that_are_still_open(vault_engines, broker):
    lease = await broker.mint("run-sess", "c", SecretRef.login("pg", PG_WRITE), 30)
    user, password = login_of(lease, "pg")
    host, port = vault_engines.pg_host_port
    conn = psycopg.connect(host=host, port=port, dbname="postgres", user=user,
                           password=password, autocommit=True)
    try:
        await broker.revoke(lease)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")  # the revocation statements terminated it
    finally:
        conn.close()


async def test_an_expired_token_takes_its_database_users_with_it(vault_engines, config):
    """The TTL path: nobody revokes (opsbot died), Vault ends the user when the token expires."""
    broker = CredentialBroker(config.model_copy(update={"ttl_margin_s": 0}))
    lease = await broker.mint("run-ttl", "c", SecretRef.login("db", REDIS_READ), 2)
    user, _ = login_of(lease, "db")
    assert user in vault_engines.redis_users()
    await wait_until(lambda: user not in vault_engines.redis_users(), 30,
                     lambda: "the user outlived its token's TTL")


async def test_a_restarted_opsbot_revokes_what_its_predecessor_left(vault_engines, config,
                                                                    tmp_path):
    """The restart path, through the audit log: rows written as graph/nodes.py writes them."""
    audit = SqliteRecords(tmp_path / "audit.sqlite").audit
    crashed = CredentialBroker(config, instance="box-a")
    left = await crashed.mint("run-crash", "c1", SecretRef.login("db", PG_READ), 60)
    done = await crashed.mint("run-crash", "c2", SecretRef.login("db", PG_READ), 60)
    other = await CredentialBroker(config, instance="box-b").mint(
        "run-other", "c1", SecretRef.login("db", PG_READ), 60)
    for lease in (left, done, other):
        await audit.record("credential.lease", lease.run_id, call_id=lease.call_id,
                           **lease.audit())
    await crashed.revoke(done)
    await audit.record("credential.revoke", done.run_id, call_id=done.call_id, **done.audit())
    user, password = login_of(left, "db")
    other_user, _ = login_of(other, "db")

    restarted = CredentialBroker(config, instance="box-c")
    dead = {"box-a"}.__contains__  # box-b is a live sibling
    assert await revoke_orphaned(audit, restarted, dead) == 1
    assert user not in vault_engines.pg_roles()
    with pytest.raises(psycopg.OperationalError):
        pg_login(vault_engines, user, password)
    assert other_user in vault_engines.pg_roles()  # another instance's action may still run
    assert [r["data"]["instance"] for r in await audit.open_leases(EPOCH)] == ["box-b"]
    assert await revoke_orphaned(audit, restarted, dead) == 0
    [row] = [r for r in await audit.story("run-crash") if r["data"].get("orphaned")]
    assert row["data"]["lease"] == left.id and row["data"]["revoked_at"]
    await CredentialBroker(config, instance="box-b").revoke(other)


async def test_a_failed_revocation_stays_open_for_the_next_start(vault_engines, config, tmp_path):
    audit = SqliteRecords(tmp_path / "audit.sqlite").audit
    broker = CredentialBroker(config, instance="box-down")
    lease = await broker.mint("run-down", "c", SecretRef.login("db", REDIS_READ), 60)
    user, _ = login_of(lease, "db")
    await audit.record("credential.lease", lease.run_id, call_id=lease.call_id, **lease.audit())
    offline = VaultConfig(addr="http://127.0.0.1:9", token=SecretStr("x"))
    await CredentialBroker(offline, instance="box-down").revoke(lease)
    assert lease.revoke_error and lease.revoked_at is None
    await audit.record("credential.revoke", lease.run_id, call_id=lease.call_id, **lease.audit())
    assert [r["data"]["lease"] for r in await audit.open_leases(EPOCH)] == [lease.id]
    assert user in vault_engines.redis_users()
    restarted = CredentialBroker(config, instance="box-up")
    assert await revoke_orphaned(audit, restarted, {"box-down"}.__contains__) == 1
    assert user not in vault_engines.redis_users()


async def test_dynamic_values_are_redacted_while_live_and_for_a_while_after(vault_engines,
                                                                            broker):
    lease = await broker.mint("run-red", "c", SecretRef.login("db", REDIS_READ), 30)
    _, password = login_of(lease, "db")
    assert REDACTOR.redact(f"pw={password}") == "pw=[redacted]"
    await broker.revoke(lease)
    assert REDACTOR.redact(f"pw={password}") == "pw=[redacted]"  # among the recently released


async def test_an_ssh_certificate_is_signed_for_one_principal_and_the_ttl(vault_engines,
                                                                           broker, tmp_path):
    refs = [SecretRef(name=f"ssh_{k}", path=SSH_SIGN, key=k, kind=SecretKind.SSH,
                      params=(("principal", "opsbot-observe"),))
            for k in ("private_key", "certificate")]
    lease = await broker.mint("run-ssh", "c", refs, 30)
    cert = lease.values["ssh_certificate"].get_secret_value()
    key = lease.values["ssh_private_key"].get_secret_value()
    (tmp_path / "id-cert.pub").write_text(cert + "\n")
    shown = subprocess.run(["ssh-keygen", "-L", "-f", str(tmp_path / "id-cert.pub")],
                           capture_output=True, text=True, check=True).stdout
    assert "Principals: \n                opsbot-observe\n" in shown
    assert "user certificate" in shown and "BEGIN OPENSSH PRIVATE KEY" in key
    [grant] = lease.audit()["grants"]
    assert grant["principal"] == "opsbot-observe" and grant["revocable"] is False
    assert grant["ttl_s"] == 31 and key not in json.dumps(lease.audit())
    await broker.revoke(lease)


@pytest.mark.parametrize(
    "ref,message",
    [
        (SecretRef(name="u", path="database/creds/*", key="username", kind=SecretKind.DATABASE),
         "`database/creds/*` is not a database role path like database/creds/<role>"),
        (SecretRef(name="u", path="database/roles/x", key="username", kind=SecretKind.DATABASE),
         "`database/roles/x` is not a database role path"),
        (SecretRef(name="u", path=REDIS_READ, key="lease_id", kind=SecretKind.DATABASE),
         "a database credential has username and password, not `lease_id`"),
        (SecretRef(name="k", path=SSH_SIGN, key="private_key", kind=SecretKind.SSH),
         "the SSH credential for ssh/sign/opsbot names no valid principal"),
        (SecretRef(name="k", path=SSH_SIGN, key="private_key", kind=SecretKind.SSH,
                   params=(("principal", "root; rm"),)),
         "the SSH credential for ssh/sign/opsbot names no valid principal (got `root; rm`)"),
    ],
)
async def test_declarations_a_kind_would_not_serve_are_refused_before_any_call(ref, message):
    with pytest.raises(VaultError) as caught:
        await CredentialBroker(None).mint("run-b", "c", [ref], 30)
    assert str(caught.value).startswith(message)


async def test_a_role_the_token_may_not_read_is_a_clear_error(vault_engines, broker):
    with pytest.raises(VaultError) as caught:
        await broker.mint("run-no", "c", SecretRef.login("db", "database/creds/nope"), 30)
    assert "database/creds/nope" in str(caught.value)
    assert str(caught.value).endswith("the action did not run.")


WRITE_ATTEMPT = """
import json, sys, redis
req = json.loads(sys.stdin.read())
host, _, port = req["endpoints"][req["config"]["endpoint"]].rpartition(":")
client = redis.Redis(host=host, port=int(port), username=req["secrets"]["redis_username"],
                     password=req["secrets"]["redis_password"], socket_timeout=5)
seen = [client.info("server")["redis_version"]]
try:
    client.set("written-by-a-tier-0-credential", "x")
    seen.append("WROTE")
except redis.RedisError as e:
    seen.append(type(e).__name__)
print(json.dumps({"status": "ok", "invocation": "write attempt", "output": " ".join(seen)}))
"""


@pytest.mark.docker
async def test_a_tier_0_actions_credential_cannot_write_from_inside_the_sandbox(
        vault_engines, broker, sandbox_runner):
    """The credential the catalog declares for ``redis info`` (tier 0), used the hostile way:
    a program in the action's container tries to write with it through the action's egress."""
    config = RedisConfig(url=vault_engines.redis.url, read_role=REDIS_READ,
                         write_role=REDIS_WRITE)
    resolved = Catalog(TOOLSETS, {"redis": config}).resolve(
        Call(id="c-w", toolset="redis", action="info"))
    assert [r.path for r in resolved.secrets] == [REDIS_READ, REDIS_READ]
    lease = await broker.mint("run-w", "c-w", resolved.secrets, 30)
    endpoint = str(resolved.egress[0])
    request = SandboxRequest(run_id="run-w", call_id="c-w", toolset="redis", action="info",
                             config={"endpoint": endpoint}, secrets=dict(lease.values),
                             egress=resolved.egress, timeout=20)
    try:
        outcome = await sandbox_runner.execute(request, ["python3", "-c", WRITE_ATTEMPT], None)
    finally:
        await broker.revoke(lease)
    assert outcome.result.output.split()[1:] == ["NoPermissionError"], outcome
    assert not vault_engines.redis_admin().exists("written-by-a-tier-0-credential")
