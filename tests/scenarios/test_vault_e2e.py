"""Per-action Vault credentials end to end: a Redis with ``requirepass`` whose password lives only
in OpenBao, read by a child token minted for one action, revoked afterwards.

opsbot's own token here is not root: it holds exactly
``sandbox.credentials.PARENT_POLICY`` (manage ``opsbot-action-*`` policies, create and revoke
tokens) and cannot read the password itself.
What the child token could do is proven from OpenBao's own audit device: the policy text it was
given (compared through ``sys/audit-hash``) and every request it made.
"""

import asyncio
import secrets
from pathlib import Path

import hvac
import pytest
import redis

from sandbox.credentials import PARENT_POLICY, policy_hcl
from tests.fakes.slack import SlackEmulator, slack_emulator  # noqa: F401 (fixture)
from tests.scenarios.harness import CHANNEL, RUN_ID, harness, settings_for
from tests.services.openbao import OpenBaoServer, start_openbao
from tests.services.redis import RedisServer, private_redis

pytestmark = pytest.mark.docker
SECRET_PATH = "kv/data/redis/prod"
SECRET_REF = f"{SECRET_PATH}#password"


@pytest.fixture
def secured_redis(tmp_path: Path):
    """A private redis-server with ``requirepass``; the test never tells opsbot the password."""
    with private_redis(tmp_path / "redis", password="rp-" + secrets.token_hex(16)) as server:
        yield server


def parent_token(vault: OpenBaoServer) -> str:
    """A token holding only opsbot's documented parent policy (what an operator would issue)."""
    client = vault.client()
    client.sys.create_or_update_acl_policy("opsbot-parent", PARENT_POLICY)
    token = client.auth.token.create(policies=["opsbot-parent"], ttl="1h")["auth"]["client_token"]
    client.adapter.close()
    return token


def _settings(slack: SlackEmulator, redis_server: RedisServer, vault: OpenBaoServer,
              data_dir: Path):
    vault.put(SECRET_PATH, password=redis_server.password)
    return settings_for(slack, redis_server.url, data_dir, vault_addr=vault.addr,
                        vault_token=parent_token(vault), redis_password_secret=SECRET_REF)


def _child_requests(vault: OpenBaoServer, accessor: str) -> list[tuple[str, str]]:
    return [(e["request"]["operation"], e["request"]["path"]) for e in vault.audit_entries()
            if e["type"] == "request" and e.get("auth", {}).get("accessor") == accessor]


def _written_policy(vault: OpenBaoServer, name: str) -> list[str]:
    return [e["request"]["data"]["policy"] for e in vault.audit_entries()
            if e["type"] == "request" and e["request"]["path"] == f"sys/policies/acl/{name}"
            and e["request"]["operation"] in ("create", "update")]


def _audit_hash(vault: OpenBaoServer, text: str) -> str:
    body = vault.client().adapter.post("/v1/sys/audit-hash/audit-file", json={"input": text})
    return body["data"]["hash"]


async def test_redis_password_only_in_vault_minted_per_action_then_revoked(
        slack_emulator: SlackEmulator, secured_redis: RedisServer,  # noqa: F811
        openbao: OpenBaoServer, sandbox_image, tmp_path):
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=secured_redis.host, port=secured_redis.port).ping()
    settings = _settings(slack_emulator, secured_redis, openbao, tmp_path / "data")
    assert secured_redis.password not in settings.model_dump_json()
    with pytest.raises(hvac.exceptions.Forbidden):
        openbao.client(settings.vault_token.get_secret_value()).read(SECRET_PATH)

    async with harness(settings, slack_emulator) as h:
        await h.command("redis info section=server")
        report = await h.report(await h.run_thread())
        assert "redis_version:" in report.text and "done" in report.text
        run_id = RUN_ID.search(report.text).group(1)
        story = await h.bot.runtime.audit.story(run_id)

    lease = next(r["data"] for r in story if r["kind"] == "credential.lease")
    revoked = next(r["data"] for r in story if r["kind"] == "credential.revoke")
    accessor, [policy] = lease["accessor"], lease["policies"]
    assert lease["paths"] == [SECRET_PATH] and lease["num_uses"] == 1
    assert revoked["accessor"] == accessor and revoked["revoked_at"] and not revoked["revoke_error"]
    root = openbao.client()
    with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid accessor"):
        root.auth.token.lookup_accessor(accessor)
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.sys.read_acl_policy(policy)
    assert _written_policy(openbao, policy) == [_audit_hash(openbao, policy_hcl((SECRET_PATH,)))]
    assert policy_hcl((SECRET_PATH,)).count("path ") == 1 and '["read"]' in policy_hcl((SECRET_PATH,))
    assert _child_requests(openbao, accessor) == [("read", SECRET_PATH)]
    assert secured_redis.password not in h.slack.all_text()


@pytest.mark.parametrize("outage", ["stopped", "sealed"])
async def test_vault_down_fails_the_action_with_a_sentence_and_runs_nothing(
        outage: str, slack_emulator: SlackEmulator, secured_redis: RedisServer,  # noqa: F811
        sandbox_image, tmp_path):
    (tmp_path / "bao").mkdir()
    proc, vault = start_openbao(tmp_path / "bao")
    try:
        settings = _settings(slack_emulator, secured_redis, vault, tmp_path / "data")
        async with harness(settings, slack_emulator) as h:
            if outage == "stopped":
                proc.terminate()
                await asyncio.to_thread(proc.wait, 10)
            else:
                vault.client().sys.seal()
            watcher = secured_redis.client()
            connections = watcher.info("stats")["total_connections_received"]
            await h.command("redis info")
            report = await h.report(await h.run_thread())
            run_id = RUN_ID.search(report.text).group(1)
            story = await h.bot.runtime.audit.story(run_id)
            assert watcher.info("stats")["total_connections_received"] == connections
    finally:
        proc.kill()
        proc.wait(5)
    cause = "is unreachable (connection refused)" if outage == "stopped" else "is sealed or unavailable"
    assert f"Vault at {vault.addr} {cause}; the action did not run." in report.text
    assert "failed" in report.text
    kinds = [r["kind"] for r in story]
    assert "sandbox.error" in kinds and "sandbox.exec" not in kinds
    assert "credential.lease" not in kinds, "no credentials were issued"
    assert [m.ts for m in h.slack.messages(CHANNEL) if not m.is_reply] == [report.thread_ts]
