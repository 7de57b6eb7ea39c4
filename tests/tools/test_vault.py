"""The Vault connector against the session's real OpenBao, with tokens the broker mints per
action (kind ``vault``) from a parent token holding only ``PARENT_POLICY``.

Actions run in-process through the sandbox entrypoint's ``handle`` (the code the container
runs); the sandbox itself is covered by the canary scenario (tests/scenarios/test_vault_connector.py).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets

import hvac
import pytest

from sandbox.credentials import CredentialBroker, VaultConfig, VaultError
from sandbox.credentials.vault_token import VaultToken, allowed
from sandbox.entrypoint import handle
from sandbox.protocol import SandboxRequest
from tests.scenarios.test_vault_e2e import parent_token
from tests.services.vault_engines import REDIS_READ
from tools.base import ActionContext, SecretKind, SecretRef, Status, Tier
from tools.catalog import Call, CallError, Catalog
from tools.vault import TOOLSET, VaultConnectorConfig

CANARY = "canary-" + secrets.token_hex(12)
_ids = itertools.count()


@pytest.fixture(scope="module")
def vault(openbao):
    """The broker and a catalog for the session OpenBao; a secret with three versions."""
    openbao.put("kv/data/app/db", password="first")
    openbao.put("kv/data/app/db", password="second")
    openbao.put("kv/data/app/db", password=CANARY)
    openbao.client().secrets.kv.v2.update_metadata(
        path="app/db", mount_point="kv", custom_metadata={"owner": CANARY + "-meta"})
    openbao.client().secrets.kv.v2.delete_secret_versions(path="app/db", versions=[1],
                                                         mount_point="kv")
    broker = CredentialBroker(VaultConfig(addr=openbao.addr, token=parent_token(openbao)))
    catalog = Catalog([TOOLSET], {"vault": VaultConnectorConfig(addr=openbao.addr,
                                                                 mounts="kv")})
    return broker, catalog


async def act(vault, action: str, preview: bool = False, **params):
    """Resolve, mint, run through the sandbox entrypoint's code, revoke; the result and lease."""
    broker, catalog = vault
    resolved = catalog.resolve(Call(id=f"c{next(_ids)}", toolset="vault", action=action,
                                    params=params))
    refs = resolved.preview_secrets if preview else resolved.secrets
    lease = await broker.mint("r-vault", resolved.call.id, refs, resolved.action.timeout)
    request = SandboxRequest(run_id="r-vault", call_id=resolved.call.id, toolset="vault",
                             action=action, params=resolved.params.model_dump(mode="json"),
                             config=resolved.config.model_dump(mode="json"),
                             secrets=dict(lease.values), preview=preview)
    try:
        result = await asyncio.to_thread(handle, request.wire(), lambda text: None)
    finally:
        await broker.revoke(lease)
    return result, lease


async def test_health_and_seal_status_need_no_token(vault):
    health, lease = await act(vault, "health")
    assert health.status is Status.OK and health.data["sealed"] is False
    assert health.output.startswith("Vault 2.") and ": active (HTTP 200)" in health.output
    assert lease.grants == []  # nothing minted for an unauthenticated endpoint
    seal, _ = await act(vault, "seal_status")
    assert seal.output.startswith("unsealed (shamir, threshold 1 of 1")


async def test_metadata_shows_versions_and_times_never_values(vault):
    result, lease = await act(vault, "metadata", path="app/db")
    assert result.status is Status.OK, result.error
    assert result.data["current_version"] == 3 and set(result.data["versions"]) == {"1", "2", "3"}
    assert result.data["versions"]["1"]["deletion_time"]  # v1 was deleted
    assert result.data["custom_metadata_keys"] == ["owner"]
    assert "v1: created" in result.output and "deleted" in result.output
    dumped = result.model_dump_json()
    assert CANARY not in dumped and "second" not in dumped and "first" not in dumped
    (grant,) = lease.grants
    assert grant.kind == "vault" and grant.facts["scopes"] == ["kv/metadata/app/db=read"]
    assert lease.revoked_at is not None and grant.revoked_at is not None


async def test_the_actions_token_cannot_read_the_value_and_dies_with_the_action(vault, openbao):
    broker, catalog = vault
    resolved = catalog.resolve(Call(id="steal", toolset="vault", action="metadata",
                                    params={"path": "app/db"}))
    lease = await broker.mint("r-vault", "steal", resolved.secrets, 20)
    token = lease.values["vault_token"].get_secret_value()
    (grant,) = lease.grants
    info = openbao.client().auth.token.lookup_accessor(grant.lease_id)["data"]
    assert info["policies"] == [grant.facts["policy"]] and info["num_uses"] == 1
    assert info["ttl"] <= 20 and not info["renewable"]
    with pytest.raises(hvac.exceptions.Forbidden):
        openbao.client(token).secrets.kv.v2.read_secret_version(
            path="app/db", mount_point="kv", raise_on_deleted_version=True)
    await broker.revoke(lease)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        openbao.client().auth.token.lookup_accessor(grant.lease_id)
    assert grant.facts["policy"] not in openbao.client().sys.list_acl_policies()["data"]["keys"]
    await broker.revoke(lease)  # idempotent


@pytest.mark.parametrize("scope,ok", [
    ("kv/metadata/app/db=read", True),
    ("kv/metadata=list", True),
    ("sys/leases/lookup/database/creds/ro=list,sudo", True),
    ("sys/leases/revoke/database/creds/ro/abc=update", True),
    ("kv/data/app/db=read", False),  # a value
    ("kv/metadata/app/db=read,update", False),  # writes metadata
    ("kv/metadata/*=read", False),  # a glob
    ("kv/metadata/app/../../data/db=read", False),
    ("sys/metadata/x=read", False),
    ("sys/leases/revoke-prefix/database=update", False),
    ("auth/token/create=update", False),
    ("sys/policies/acl/root=update", False),
    ("kv/metadata/app=", False),
])
def test_the_kind_mints_only_metadata_scopes(scope, ok):
    path, _, caps = scope.partition("=")
    assert allowed(path, tuple(c for c in caps.split(",") if c)) is ok
    ref = SecretRef(name="vault_token", path="vault-token", key="token", kind=SecretKind.VAULT,
                    params=(("scopes", scope),))
    if ok:
        VaultToken().validate(ref)
    else:
        with pytest.raises(VaultError, match="did not run"):
            VaultToken().validate(ref)


async def test_a_data_scope_is_refused_before_vault_is_asked(vault, openbao):
    """Turn the guard off (a kind that skips ``validate``): the token reads the value. So the
    shape check is what keeps a value path out of a minted token."""
    broker, _ = vault
    ref = SecretRef(name="vault_token", path="vault-token", key="token", kind=SecretKind.VAULT,
                    params=(("scopes", "kv/data/app/db=read"),))
    before = len(openbao.audit_entries())
    with pytest.raises(VaultError, match="is not a metadata path"):
        await broker.mint("r-vault", "bad", [ref], 20)
    assert not [e for e in openbao.audit_entries()[before:] if e["type"] == "request"]

    class Unchecked(VaultToken):
        def validate(self, ref):
            return None

    careless = CredentialBroker(broker._config, kinds={SecretKind.VAULT: Unchecked()})
    lease = await careless.mint("r-vault", "bad", [ref], 20)
    token = lease.values["vault_token"].get_secret_value()
    body = openbao.client(token).secrets.kv.v2.read_secret_version(
        path="app/db", mount_point="kv", raise_on_deleted_version=True)
    assert body["data"]["data"]["password"] == CANARY
    await careless.revoke(lease)


async def test_secret_names_under_a_prefix(vault, openbao):
    openbao.put("kv/data/app/api", token="t")
    listed, _ = await act(vault, "secrets", prefix="app")
    assert listed.data == ["api", "db"]
    empty, _ = await act(vault, "secrets", prefix="nothing/here")
    assert empty.status is Status.NO_DATA
    missing, _ = await act(vault, "metadata", path="no/such")
    assert missing.status is Status.NO_DATA and missing.output == "No secret at kv/no/such."


async def test_token_lookup_by_accessor(vault, openbao):
    made = openbao.client().auth.token.create(policies=["default"], ttl="5m",
                                              display_name="deploy")["auth"]
    result, _ = await act(vault, "token", accessor=made["accessor"])
    assert result.status is Status.OK, result.error
    assert result.data["display_name"] == "token-deploy" and result.data["ttl"] <= 300
    assert made["client_token"] not in result.model_dump_json() and "id" not in result.data
    unknown, _ = await act(vault, "token", accessor="nOtAnAccessorAtAll")
    assert unknown.status is Status.ERROR and unknown.error.startswith("Vault answered 400")


async def test_leases_lookup_and_revoke_a_database_user(vault_engines):
    """A real lease: a Redis ACL user the database engine made. Revoking it drops the user."""
    engines = vault_engines
    creds = engines.openbao.client().read(REDIS_READ)
    user = creds["data"]["username"]
    assert user in engines.redis_users()
    broker = CredentialBroker(VaultConfig(addr=engines.openbao.addr,
                                          token=engines.parent_token()))
    catalog = Catalog([TOOLSET], {"vault": VaultConnectorConfig(addr=engines.openbao.addr)})
    conn = (broker, catalog)
    listed, _ = await act(conn, "leases", prefix=REDIS_READ)
    assert creds["lease_id"].rsplit("/", 1)[1] in listed.data
    looked, _ = await act(conn, "lease", lease_id=creds["lease_id"])
    assert looked.data["id"] == creds["lease_id"] and looked.data["ttl"] > 0
    assert creds["data"]["password"] not in looked.model_dump_json()
    preview, lease = await act(conn, "revoke_lease", preview=True, lease_id=creds["lease_id"])
    assert preview.status is Status.OK and user in engines.redis_users()  # a preview only looks
    assert lease.grants[0].facts["scopes"] == ["sys/leases/lookup=update"]
    revoked, lease = await act(conn, "revoke_lease", lease_id=creds["lease_id"])
    assert revoked.output == f"Lease {creds['lease_id']} revoked."
    assert lease.grants[0].facts["scopes"] == [f"sys/leases/revoke/{creds['lease_id']}=update"]
    assert user not in engines.redis_users()


async def test_a_revoke_token_revokes_only_its_own_lease(vault_engines):
    engines = vault_engines
    mine, other = (engines.openbao.client().read(REDIS_READ) for _ in range(2))
    broker = CredentialBroker(VaultConfig(addr=engines.openbao.addr,
                                          token=engines.parent_token()))
    catalog = Catalog([TOOLSET], {"vault": VaultConnectorConfig(addr=engines.openbao.addr)})
    resolved = catalog.resolve(Call(id="rv", toolset="vault", action="revoke_lease",
                                    params={"lease_id": mine["lease_id"]}))
    lease = await broker.mint("r-vault", "rv", resolved.secrets, 20)
    client = engines.openbao.client(lease.values["vault_token"].get_secret_value())
    with pytest.raises(hvac.exceptions.Forbidden):
        client.sys.revoke_lease(other["lease_id"])
    await broker.revoke(lease)
    assert other["data"]["username"] in engines.redis_users()
    engines.openbao.client().sys.revoke_lease(mine["lease_id"])
    engines.openbao.client().sys.revoke_lease(other["lease_id"])


def test_tiers_targets_and_refusals(openbao):
    tiers = {a.name: int(a.tier) for a in TOOLSET.actions}
    assert tiers.pop("revoke_lease") == Tier.PRODUCTION and set(tiers.values()) == {0}
    catalog = Catalog([TOOLSET], {"vault": VaultConnectorConfig(addr="https://vault.example:8200",
                                                                 mounts="kv,secret")})

    def resolve(action, **params):
        return catalog.resolve(Call(id="t", toolset="vault", action=action, params=params))

    meta = resolve("metadata", mount="secret", path="team/api")
    assert meta.target.name == "secret/team/api" and meta.target.attrs["mount"] == "secret"
    assert [str(e) for e in meta.egress] == ["vault.example:8200"]
    revoke = resolve("revoke_lease", lease_id="database/creds/ro/AbC")
    assert revoke.target.attrs["prefix"] == "database/creds/ro"
    with pytest.raises(CallError, match="`other` is not a KV mount opsbot may look into"):
        resolve("metadata", mount="other", path="x")
    for bad in ({"path": "../sys/x"}, {"path": "a/*"}, {"path": "a//b"}, {"path": "a/./b"}):
        with pytest.raises(CallError, match="path"):
            resolve("metadata", **bad)
    with pytest.raises(ValueError, match="KV v2 mounts"):
        VaultConnectorConfig(addr="http://x:8200", mounts="kv/data")


def test_an_unreachable_vault_is_an_error_value():
    action = TOOLSET.action("health")
    ctx = ActionContext(config={"addr": "http://127.0.0.1:9", "mounts": ["kv"]})
    result = action.run(action.params(), ctx)
    assert result.status is Status.ERROR and result.error == "Cannot reach Vault: ConnectionError."
