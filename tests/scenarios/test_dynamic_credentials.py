"""Credentials that die with the action, end to end: the whole bot, a Redis whose only way in is
an ACL user that OpenBao's database engine creates per action, and opsbot's token holding
exactly ``PARENT_POLICY``.

What the Redis server saw is read from Redis itself (``ACL LOG``, ``ACL USERS``), not from
opsbot's account of itself.
"""

from __future__ import annotations

import pytest
import redis

from tests.fakes.slack import SlackEmulator, slack_emulator  # noqa: F401 (fixture)
from tests.scenarios.harness import APPROVER, RUN_ID, harness, settings_for
from tests.scenarios.test_vault_e2e import parent_token
from tests.services.vault_engines import REDIS_READ, REDIS_WRITE

pytestmark = pytest.mark.docker


def dynamic_settings(slack, engines, data_dir, **more):
    return settings_for(slack, engines.redis.url, data_dir, vault_addr=engines.openbao.addr,
                        vault_token=parent_token(engines.openbao), redis_read_role=REDIS_READ,
                        redis_write_role=REDIS_WRITE, **more)


def leases(story: list[dict]) -> tuple[list[dict], list[dict]]:
    return ([r["data"] for r in story if r["kind"] == "credential.lease"],
            [r["data"] for r in story if r["kind"] == "credential.revoke"])


async def test_each_redis_action_logs_in_as_a_user_of_its_own_that_is_gone_after(
        slack_emulator: SlackEmulator, vault_engines, sandbox_image, tmp_path):  # noqa: F811
    admin = vault_engines.redis_admin()
    admin.set("dyn:victim", "v")
    with pytest.raises(redis.AuthenticationError):  # no password, no way in
        redis.Redis(host=vault_engines.redis.host, port=vault_engines.redis.port).ping()
    settings = dynamic_settings(slack_emulator, vault_engines, tmp_path / "data")
    async with harness(settings, slack_emulator) as h:
        await h.command("redis info section=server")
        info = await h.report(await h.run_thread())
        await h.command("redis del dyn:victim")
        thread = await h.run_thread(1)
        await h.click(await h.card(thread), APPROVER)
        deleted = await h.report(thread)
        stories = [h.bot.runtime.audit.story(RUN_ID.search(m.text).group(1))
                   for m in (info, deleted)]

    assert "redis_version:" in info.text and "Deleted 1 of 1 keys" in deleted.text
    assert admin.exists("dyn:victim") == 0
    users = []
    for story, role in zip(stories, ("opsbot-redis-read", "opsbot-redis-write"), strict=True):
        minted, revoked = leases(story)
        grants = [g for lease in minted for g in lease["grants"]]
        assert {g["role"] for g in grants} == {role}
        assert all(r["revoked_at"] and not r["revoke_error"] for r in revoked)
        users += [g["username"] for g in grants]
    assert len(set(users)) == len(users) == 3  # info, del's preview, del: a user each
    assert not set(users) & set(vault_engines.redis_users())
