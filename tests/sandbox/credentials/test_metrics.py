"""The broker's Prometheus counters: what was minted and revoked, by secret kind, and what
failed (no Vault needed: a static secret, and a Vault address nobody listens on)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from sandbox.credentials import CredentialBroker, Lease, VaultConfig, VaultError
from tests.services import free_port
from tools.base import SecretRef


def count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_static_mint_and_its_revocation_are_counted_by_kind():
    minted, revoked = (count("opsbot_credentials_minted_total", kind="static"),
                       count("opsbot_credentials_revoked_total", kind="static"))
    broker = CredentialBroker(None, {"GITHUB_TOKEN": SecretStr("ghp-metrics-test")})
    ref = SecretRef(name="github_token", path="static:GITHUB_TOKEN", key="value")
    lease = await broker.mint("run-m", "c", [ref], 30)
    assert count("opsbot_credentials_minted_total", kind="static") == minted + 1
    await broker.revoke(lease)
    await broker.revoke(lease)  # idempotent: counted once
    assert count("opsbot_credentials_revoked_total", kind="static") == revoked + 1


async def test_failed_mints_and_revocations_are_counted():
    failed_mints = count("opsbot_credential_failures_total", operation="mint")
    failed_revokes = count("opsbot_credential_failures_total", operation="revoke")
    addr = f"http://127.0.0.1:{free_port()}"
    broker = CredentialBroker(VaultConfig(addr=addr, token=SecretStr("t0ken-never-used")))
    with pytest.raises(VaultError):
        await broker.mint("run-f", "c", [SecretRef(name="pw", path="kv/data/x", key="pw")], 30)
    assert count("opsbot_credential_failures_total", operation="mint") == failed_mints + 1
    await broker.revoke(Lease("run-f", "c", policy="opsbot-action-f", accessor="acc1"))
    assert count("opsbot_credential_failures_total", operation="revoke") == failed_revokes + 1
