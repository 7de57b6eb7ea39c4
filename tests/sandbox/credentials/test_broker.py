"""The credential broker against a real OpenBao dev server.

What Vault actually issued and what each token did is read back from OpenBao's own audit log
(``openbao.audit_entries()``), not from the broker's account of itself.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import socket
import time

import hvac
import pytest
import structlog
from pydantic import SecretStr, ValidationError

from sandbox.credentials import PARENT_POLICY, CredentialBroker, Lease, VaultConfig, VaultError
from tests.services import free_port
from tools.base import SecretRef
from tools.secrets import REDACTOR


def canary() -> str:
    return f"canary-{secrets.token_hex(16)}"


def unique_path(openbao, **data) -> str:
    return openbao.put(f"kv/data/t/{secrets.token_hex(6)}", **data)


@pytest.fixture
def config(openbao) -> VaultConfig:
    return VaultConfig(addr=openbao.addr, token=SecretStr(openbao.root_token), ttl_margin_s=5)


@pytest.fixture
def broker(config) -> CredentialBroker:
    return CredentialBroker(config)


def issued(openbao, accessor: str) -> dict:
    """OpenBao's record of the token it minted with this accessor (the create response)."""
    for entry in openbao.audit_entries():
        auth = (entry.get("response") or {}).get("auth") or {}
        if entry["type"] == "response" and auth.get("accessor") == accessor:
            return auth
    raise AssertionError(f"OpenBao never issued a token with accessor {accessor}")


def requests_made_by(openbao, accessor: str) -> list[tuple[str, str, bool]]:
    """(operation, path, allowed) for every request the token with this accessor made."""
    return [
        (e["request"]["operation"], e["request"]["path"], "error" not in e)
        for e in openbao.audit_entries()
        if e["type"] == "response" and (e.get("auth") or {}).get("accessor") == accessor
    ]


def token_alive(openbao, accessor: str) -> bool:
    try:
        openbao.client().auth.token.lookup_accessor(accessor)
        return True
    except hvac.exceptions.InvalidRequest:
        return False


def policy_exists(openbao, name: str) -> bool:
    return name in openbao.client().sys.list_acl_policies()["data"]["keys"]


async def test_mint_reads_declared_secret_and_revoke_ends_it(openbao, broker):
    value = canary()
    path = unique_path(openbao, password=value, other="not-asked-for")
    ref = SecretRef(name="pw", path=path, key="password")
    lease = await broker.mint("run-1", "call-1", [ref], 30)
    assert {k: v.get_secret_value() for k, v in lease.values.items()} == {"pw": value}
    assert requests_made_by(openbao, lease.accessor) == [("read", path, True)]
    assert policy_exists(openbao, lease.policy)
    await broker.revoke(lease)
    assert not token_alive(openbao, lease.accessor)
    assert not policy_exists(openbao, lease.policy)
    assert lease.revoked_at is not None and lease.revoke_error is None
    assert lease.values == {}


async def test_ttl_num_uses_and_policies_are_what_vault_issued(openbao, broker):
    path_a = unique_path(openbao, user="u", password="p-a-1234")
    path_b = unique_path(openbao, password="p-b-1234")
    refs = [SecretRef(name="user", path=path_a, key="user"),
            SecretRef(name="pw_a", path=path_a, key="password"),
            SecretRef(name="pw_b", path=path_b, key="password")]
    lease = await broker.mint("run-ttl", "call-1", refs, ttl_s=42.3)
    vault_side = issued(openbao, lease.accessor)
    assert vault_side["token_ttl"] == lease.ttl_s == math.ceil(42.3 + 5)
    assert vault_side["num_uses"] == lease.num_uses == 2  # one read per distinct path
    assert vault_side["policies"] == lease.policies == [lease.policy]  # no `default` policy
    assert vault_side["metadata"] == {"run_id": "run-ttl", "call_id": "call-1"}
    assert sorted(requests_made_by(openbao, lease.accessor)) == sorted(
        [("read", path_a, True), ("read", path_b, True)]
    )
    assert not token_alive(openbao, lease.accessor)  # every use spent: Vault retired it already
    await broker.revoke(lease)


async def test_the_lease_policy_allows_reading_the_declared_path_and_nothing_else(openbao, broker):
    declared = unique_path(openbao, password="declared-1234")
    other = unique_path(openbao, password="other-1234")
    ref = SecretRef(name="pw", path=declared, key="password")
    lease = await broker.mint("run-p", "c", [ref], 30)
    text = openbao.client().sys.read_acl_policy(lease.policy)["data"]["policy"]
    assert text == f'path "{declared}" {{\n  capabilities = ["read"]\n}}\n'
    twin = openbao.client().auth.token.create(
        policies=[lease.policy], no_default_policy=True, ttl="30s"
    )["auth"]["client_token"]
    same_grant = openbao.client(twin)
    assert same_grant.read(declared)["data"]["data"] == {"password": "declared-1234"}
    for attempt in (
        lambda: same_grant.read(other),
        lambda: same_grant.secrets.kv.v2.create_or_update_secret(
            path=declared.removeprefix("kv/data/"), secret={"x": "y"}, mount_point="kv"
        ),
        lambda: same_grant.list("kv/metadata/t"),
        lambda: same_grant.auth.token.create(policies=[lease.policy]),
    ):
        with pytest.raises(hvac.exceptions.Forbidden, match="permission denied"):
            attempt()
    await broker.revoke(lease)
    with pytest.raises(hvac.exceptions.Forbidden):  # the deleted policy no longer grants anything
        same_grant.read(declared)


async def test_revoke_is_idempotent_and_handles_half_built_leases(openbao, broker):
    root = openbao.client()
    name = "opsbot-action-half-built"
    root.sys.create_or_update_acl_policy(name, 'path "kv/data/x" { capabilities = ["read"] }')
    live = root.auth.token.create(policies=[name], num_uses=5, ttl="60s")["auth"]
    only_policy = Lease("run-h", "a", policy=name)
    with_token = Lease("run-h", "b", accessor=live["accessor"])
    nothing = Lease("run-h", "c")
    for lease in (only_policy, with_token, nothing):
        await broker.revoke(lease)
        first = lease.revoked_at
        await broker.revoke(lease)
        assert first is not None and lease.revoked_at == first and lease.revoke_error is None
    assert not policy_exists(openbao, name)
    assert not token_alive(openbao, live["accessor"])


async def test_failed_mint_revokes_the_live_token_and_deletes_its_policy(openbao, broker):
    present = unique_path(openbao, password="present-1234")
    missing = f"kv/data/t/missing-{secrets.token_hex(4)}"
    refs = [SecretRef(name="a", path=missing, key="password"),
            SecretRef(name="b", path=present, key="password")]
    with pytest.raises(VaultError) as caught:
        await broker.mint("run-fail", "call-x", refs, 30)
    assert str(caught.value) == (
        f"secret {missing} does not exist in Vault at {openbao.addr}; the action did not run."
    )
    created = [
        e["response"]["auth"] for e in openbao.audit_entries()
        if e["type"] == "response" and e["request"]["path"] == "auth/token/create"
        and (e["response"].get("auth") or {}).get("metadata", {}).get("run_id") == "run-fail"
    ]
    assert len(created) == 1 and created[0]["num_uses"] == 2  # one use left when the read failed
    assert not token_alive(openbao, created[0]["accessor"])
    assert not any(p.startswith("opsbot-action-run-fail") for p in root_policies(openbao))


def root_policies(openbao) -> list[str]:
    return openbao.client().sys.list_acl_policies()["data"]["keys"]


async def test_missing_key_is_a_clear_error(openbao, broker):
    path = unique_path(openbao, username="svc")
    with pytest.raises(VaultError) as caught:
        await broker.mint("run-k", "c", [SecretRef(name="pw", path=path, key="password")], 30)
    assert str(caught.value) == f"secret {path} has no key `password`; the action did not run."
    assert not any(p.startswith("opsbot-action-run-k-") for p in root_policies(openbao))


async def test_vault_down_is_a_clear_error():
    addr = f"http://127.0.0.1:{free_port()}"
    broker = CredentialBroker(VaultConfig(addr=addr, token=SecretStr("t0ken-never-used")))
    ref = SecretRef(name="pw", path="kv/data/redis/prod", key="password")
    with pytest.raises(VaultError) as minting:
        await broker.mint("run-d", "c", [ref], 30)
    assert minting.value.message == str(minting.value) == (
        f"Vault at {addr} is unreachable (connection refused); the action did not run."
    )
    with pytest.raises(VaultError, match=r"unreachable \(connection refused\); opsbot cannot mint"):
        await broker.check()


async def test_revoke_while_vault_is_down_records_the_failure_instead_of_raising():
    addr = f"http://127.0.0.1:{free_port()}"
    broker = CredentialBroker(VaultConfig(addr=addr, token=SecretStr("t0ken-never-used")))
    lease = Lease("run-r", "c", values={"pw": SecretStr("gone-1234")},
                  policy="opsbot-action-r", accessor="acc123")
    with structlog.testing.capture_logs() as logs:
        await broker.revoke(lease)
    assert lease.revoke_error == (
        f"Vault at {addr} is unreachable (connection refused); "
        "token acc123 still expires at its TTL."
    )
    assert lease.revoked_at is None and lease.values == {}
    assert [e["event"] for e in logs] == ["vault.lease.revoke_failed"]
    assert logs[0]["revoke_error"] == lease.revoke_error


async def test_a_silent_vault_is_a_timeout_sentence():
    with socket.socket() as listener:  # accepts connections (kernel backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        addr = f"http://127.0.0.1:{listener.getsockname()[1]}"
        broker = CredentialBroker(VaultConfig(addr=addr, token=SecretStr("t"), timeout_s=0.3))
        with pytest.raises(VaultError) as caught:
            await broker.check()
    assert str(caught.value) == (
        f"Vault at {addr} is unreachable (no answer within 0.3 s); opsbot cannot mint credentials."
    )


async def test_invalid_token_is_a_clear_error(openbao):
    config = VaultConfig(addr=openbao.addr, token=SecretStr("s.not-a-real-token"))
    broker = CredentialBroker(config)
    ref = SecretRef(name="pw", path="kv/data/redis/prod", key="password")
    with pytest.raises(VaultError) as minting:
        await broker.mint("run-i", "c", [ref], 30)
    assert str(minting.value).startswith(
        f"Vault at {openbao.addr} rejected VAULT_TOKEN while trying to write the action's policy "
        "(permission denied): the token is invalid, expired or revoked"
    )
    with pytest.raises(VaultError, match="rejected VAULT_TOKEN while trying to check VAULT_TOKEN"):
        await broker.check()


async def test_check_accepts_the_documented_least_privilege_token(openbao):
    root = openbao.client()
    root.sys.create_or_update_acl_policy("opsbot-parent", PARENT_POLICY)
    token = root.auth.token.create(policies=["opsbot-parent"], ttl="10m")["auth"]["client_token"]
    broker = CredentialBroker(VaultConfig(addr=openbao.addr, token=SecretStr(token)))
    await broker.check()
    path = unique_path(openbao, password="least-priv-1234")
    lease = await broker.mint("run-lp", "c", [SecretRef(name="pw", path=path, key="password")], 10)
    assert lease.values["pw"].get_secret_value() == "least-priv-1234"
    await broker.revoke(lease)
    assert lease.revoke_error is None and not policy_exists(openbao, lease.policy)


async def test_check_names_the_missing_capability(openbao):
    root = openbao.client()
    root.sys.create_or_update_acl_policy("read-only", 'path "kv/*" { capabilities = ["read"] }')
    token = root.auth.token.create(policies=["read-only"], ttl="10m")["auth"]["client_token"]
    broker = CredentialBroker(VaultConfig(addr=openbao.addr, token=SecretStr(token)))
    with pytest.raises(VaultError) as caught:
        await broker.check()
    assert str(caught.value).startswith(
        "VAULT_TOKEN lacks `create`, `update`, `delete` on sys/policies/acl/opsbot-action-check;"
    )


async def test_static_refs_resolve_without_vault():
    value = canary()
    broker = CredentialBroker(None, {"GITHUB_TOKEN": SecretStr(value)})
    await broker.check()  # nothing configured, nothing to check
    ref = SecretRef(name="github_token", path="static:GITHUB_TOKEN", key="value")
    lease = await broker.mint("run-s", "c", [ref], 30)
    assert lease.values["github_token"].get_secret_value() == value
    assert lease.audit()["accessor"] is None and lease.audit()["static"] == ["GITHUB_TOKEN"]
    assert REDACTOR.redact(f"token={value}") == "token=[redacted]"
    await broker.revoke(lease)
    assert lease.revoked_at is not None


async def test_static_and_vault_refs_in_one_lease(openbao, broker):
    path = unique_path(openbao, password="mixed-1234")
    mixed = CredentialBroker(broker._config, {"GITHUB_TOKEN": SecretStr("ghp_mixed_1234")})
    refs = [SecretRef(name="gh", path="static:GITHUB_TOKEN", key=""),
            SecretRef(name="pw", path=path, key="password")]
    lease = await mixed.mint("run-m", "c", refs, 30)
    assert {k: v.get_secret_value() for k, v in lease.values.items()} == {
        "gh": "ghp_mixed_1234", "pw": "mixed-1234"
    }
    assert lease.num_uses == 1
    await mixed.revoke(lease)


@pytest.mark.parametrize(
    "ref,message",
    [
        (SecretRef(name="gh", path="static:GITHUB_TOKEN", key=""),
         "the static secret GITHUB_TOKEN is not set in opsbot's settings; the action did not run."),
        (SecretRef(name="pw", path="kv/data/redis/prod", key="password"),
         "this action needs secrets from Vault, but VAULT_ADDR and VAULT_TOKEN are not set; "
         "set both and restart opsbot. The action did not run."),
        (SecretRef(name="pw", path="kv/data/*", key="password"),
         "secret path `kv/data/*` is not a plain KV v2 API path like kv/data/redis/prod "
         "(no wildcards, no leading slash); the action did not run."),
        (SecretRef(name="pw", path="kv/data/../sys", key="password"),
         "secret path `kv/data/../sys` is not a plain KV v2 API path"),
        (SecretRef(name="pw", path='kv/data/x" {} path "sys/*', key="password"),
         "secret path `kv/data/x\" {} path \"sys/*` is not a plain KV v2 API path"),
        (SecretRef(name="x", path="static:", key=""),
         "secret `x` names no static setting"),
    ],
)
async def test_refs_that_cannot_be_served_are_refused_before_any_call(ref, message):
    with pytest.raises(VaultError) as caught:
        await CredentialBroker(None).mint("run-b", "c", [ref], 30)
    assert str(caught.value).startswith(message)


async def test_programming_errors_are_value_errors():
    broker = CredentialBroker(None, {"A": SecretStr("aaaa"), "B": SecretStr("bbbb")})
    twice = [SecretRef(name="x", path=f"static:{n}", key="") for n in "AB"]
    with pytest.raises(ValueError, match="two secrets are both named `x`"):
        await broker.mint("r", "c", twice, 30)
    with pytest.raises(ValueError, match="ttl_s must be positive"):
        await broker.mint("r", "c", [], 0)


def test_config_is_validated():
    with pytest.raises(ValidationError, match=r"must look like http://127\.0\.0\.1:8200"):
        VaultConfig(addr="127.0.0.1:8200", token=SecretStr("t"))
    with pytest.raises(ValidationError, match="is empty"):
        VaultConfig(addr="http://vault:8200", token=SecretStr("  "))
    assert VaultConfig(addr="https://vault:8200/", token=SecretStr("t")).addr == "https://vault:8200"


async def test_values_are_redacted_and_never_in_audit_logs_or_repr(openbao, broker, config):
    value = canary()
    path = unique_path(openbao, password=value)
    with structlog.testing.capture_logs() as logs:
        ref = SecretRef(name="pw", path=path, key="password")
        lease = await broker.mint("run-c", "c", [ref], 30)
        assert REDACTOR.redact(f"auth {value} ok") == "auth [redacted] ok"
        minted = json.dumps(lease.audit())
        await broker.revoke(lease)
    revoked = json.dumps(lease.audit())
    seen = [minted, revoked, repr(lease), str(lease), json.dumps(logs, default=str)]
    assert [e["event"] for e in logs] == ["vault.lease.minted", "vault.lease.revoked"]
    required = {"accessor", "policies", "ttl_s", "num_uses", "created_at", "revoked_at"}
    assert required <= set(json.loads(minted))
    assert not {"run_id", "call_id"} & set(json.loads(minted))  # the audit row carries those
    parent = config.token.get_secret_value()
    for text in seen:
        assert value not in text and parent not in text
        assert '"s.' not in text and "hvs." not in text  # no Vault/OpenBao token of any kind


async def test_a_cancelled_mint_is_revoked_when_its_thread_finishes(openbao, broker):
    path = unique_path(openbao, password="cancel-1234")
    task = asyncio.create_task(
        broker.mint("run-cancel", "c", [SecretRef(name="pw", path=path, key="password")], 30)
    )
    await asyncio.sleep(0)  # the worker thread has started talking to Vault
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 10
    while not _policy_deleted_for(openbao, "run-cancel"):
        assert time.monotonic() < deadline, "the cancelled mint's policy was never deleted"
        await asyncio.sleep(0.05)
    assert not any(p.startswith("opsbot-action-run-cancel") for p in root_policies(openbao))


def _policy_deleted_for(openbao, run: str) -> bool:
    return any(
        e["type"] == "response" and e["request"]["operation"] == "delete"
        and e["request"]["path"].startswith(f"sys/policies/acl/opsbot-action-{run}")
        for e in openbao.audit_entries()
    )


async def test_concurrent_mints_get_their_own_values(openbao, broker):
    paths = [unique_path(openbao, password=f"concurrent-{i}-1234") for i in range(8)]
    leases = await asyncio.gather(*(
        broker.mint(f"run-{i}", "c", [SecretRef(name="pw", path=p, key="password")], 30)
        for i, p in enumerate(paths)
    ))
    assert [lease.values["pw"].get_secret_value() for lease in leases] == [
        f"concurrent-{i}-1234" for i in range(8)
    ]
    assert len({lease.accessor for lease in leases}) == 8
    await asyncio.gather(*(broker.revoke(lease) for lease in leases))
    assert all(lease.revoke_error is None for lease in leases)


async def test_namespace_is_honoured(openbao):
    namespace = f"team-{secrets.token_hex(3)}"
    root = openbao.client()
    root.adapter.post(f"/v1/sys/namespaces/{namespace}", json={})
    inside = hvac.Client(url=openbao.addr, token=openbao.root_token, namespace=namespace)
    inside.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
    inside.secrets.kv.v2.create_or_update_secret(
        path="db", secret={"password": "ns-pass-1234"}, mount_point="kv"
    )
    token = SecretStr(openbao.root_token)
    broker = CredentialBroker(VaultConfig(addr=openbao.addr, token=token, namespace=namespace))
    ref = SecretRef(name="pw", path="kv/data/db", key="password")
    lease = await broker.mint("run-ns", "c", [ref], 30)
    assert lease.values["pw"].get_secret_value() == "ns-pass-1234"
    assert lease.policy in inside.sys.list_acl_policies()["data"]["keys"]
    assert lease.policy not in root_policies(openbao)
    await broker.revoke(lease)
    assert lease.policy not in inside.sys.list_acl_policies()["data"]["keys"]


def test_the_operators_policy_file_is_the_parent_policy():
    """deploy/vault/opsbot-policy.hcl is what the README's set-up script uploads."""
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[3] / "deploy" / "vault" / "opsbot-policy.hcl"
    assert shipped.read_text() == PARENT_POLICY
