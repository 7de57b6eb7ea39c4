"""Credentials that die with the action, end to end: the whole bot, a Redis whose only way in is
an ACL user that OpenBao's database engine creates per action, and opsbot's token holding
exactly ``PARENT_POLICY``.

What the Redis server saw is read from Redis itself (``ACL LOG``, ``ACL USERS``), not from
opsbot's account of itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from tests.fakes.openai import OpenAIEmulator, openai_emulator, text, tool_call  # noqa: F401
from tests.fakes.payloads import SlackClient
from tests.fakes.server import wait_until
from tests.fakes.slack import SlackEmulator, slack_emulator  # noqa: F401 (fixture)
from tests.scenarios.harness import APPROVER, REQUESTER, RUN_ID, harness, settings_for
from tests.scenarios.process import (  # noqa: F401 (fixture)
    AuditFile,
    BotProcesses,
    ProcessHarness,
    bot_env,
    bot_processes,
)
from tests.services.vault_engines import PG_READ, PG_WRITE, REDIS_READ, REDIS_WRITE

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.docker


def dynamic_settings(slack, engines, data_dir, **more):
    return settings_for(slack, engines.redis.url, data_dir, vault_addr=engines.openbao.addr,
                        vault_token=engines.parent_token(), redis_read_role=REDIS_READ,
                        redis_write_role=REDIS_WRITE, **more)


def postgres_settings(slack, engines, data_dir, database: str):
    return dynamic_settings(slack, engines, data_dir, postgres_url=engines.pg_url(database),
                            postgres_read_role=PG_READ, postgres_write_role=PG_WRITE)


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
        stories = [await h.bot.runtime.audit.story(RUN_ID.search(m.text).group(1))
                   for m in (info, deleted)]

    assert "redis_version:" in info.text and "Deleted 1 of 1 keys" in deleted.text
    assert admin.exists("dyn:victim") == 0
    users = []
    roles = (["opsbot-redis-read"],  # del: its preview, itself, its check (exists)
             ["opsbot-redis-read", "opsbot-redis-write", "opsbot-redis-read"])
    for story, expected in zip(stories, roles, strict=True):
        minted, revoked = leases(story)
        grants = [g for lease in minted for g in lease["grants"]]
        assert [g["role"] for g in grants] == expected
        assert all(r["revoked_at"] and not r["revoke_error"] for r in revoked)
        users += [g["username"] for g in grants]
    assert len(set(users)) == len(users) == 4  # info, del's preview, del, its check: a user each
    assert not set(users) & set(vault_engines.redis_users())


def preview_of(card) -> str:
    return next(b["text"]["text"] for b in card.blocks
                if "*Preview*" in b.get("text", {}).get("text", ""))


async def test_terminate_is_gated_previewed_approved_and_ends_exactly_that_backend(
        slack_emulator: SlackEmulator, vault_engines, app, sandbox_image, tmp_path):  # noqa: F811
    stuck = app.open(autocommit=False)
    stuck.execute("update accounts set balance = 7 where id = 3")  # idle in transaction, locked
    bystander = app.open()
    pid = stuck.info.backend_pid
    database = app.dsn.rsplit("/", 1)[-1]
    settings = postgres_settings(slack_emulator, vault_engines, tmp_path / "data", database)
    async with harness(settings, slack_emulator) as h:
        await h.command("postgres query sql=\"insert into accounts values (99, 1)\"")
        refused = await h.report(await h.run_thread())
        await h.command(f"postgres terminate pid={pid}")
        thread = await h.run_thread(1)
        card = await h.card(thread)
        assert stuck.execute("select 1").fetchone() == (1,), "nothing ran before the approval"
        await h.click(card, REQUESTER)  # tier 4: not by the requester
        await h.click(card, APPROVER)
        done = await h.report(thread)
        story = await h.bot.runtime.audit.story(RUN_ID.search(done.text).group(1))

    assert "read-only transaction" in refused.text
    assert "update accounts set balance = 7 where id = 3" in preview_of(card)
    assert "idle in transaction" in preview_of(card)
    assert f"Backend {pid}: terminate sent." in done.text
    with pytest.raises(psycopg.OperationalError):
        stuck.execute("select 1")
    assert bystander.execute("select 1").fetchone() == (1,)
    minted, _ = leases(story)
    assert [g["role"] for lease in minted for g in lease["grants"]] == [
        "opsbot-postgres-read", "opsbot-postgres-write"]  # the preview only reads


def sleeping_role(dsn: str) -> str | None:
    """The role of a session running the action's ``pg_sleep`` (an opsbot dynamic role)."""
    with psycopg.connect(dsn.rsplit("/", 1)[0] + "/postgres") as admin:
        row = admin.execute("select usename from pg_stat_activity where query like "
                            "'%%pg_sleep(40)%%' and usename like 'v-token-%%'").fetchone()
    return row[0] if row else None


async def test_sigkill_mid_action_leaves_no_usable_credential_after_restart(
        bot_processes: BotProcesses, slack_emulator: SlackEmulator,  # noqa: F811
        vault_engines, app, sandbox_image, tmp_path):
    database = app.dsn.rsplit("/", 1)[-1]
    env = bot_env(slack_emulator, tmp_path / "data", vault_engines.redis.url, sandbox_image,
                  VAULT_ADDR=vault_engines.openbao.addr, VAULT_TOKEN=vault_engines.parent_token(),
                  OPSBOT_POSTGRES_URL=vault_engines.pg_url(database),
                  OPSBOT_POSTGRES_READ_ROLE=PG_READ, OPSBOT_POSTGRES_WRITE_ROLE=PG_WRITE)
    first = await bot_processes.start(env)
    async with SlackClient(first.events_url) as client:
        h = ProcessHarness(first, slack_emulator, client)
        await h.command('postgres query sql="select pg_sleep(40)" timeout_s=45')
    role = await wait_until(lambda: sleeping_role(app.dsn), 60,
                            lambda: f"the action never ran: {first.tail()}")
    assert role in vault_engines.pg_roles()  # a second connection sees the action's role

    await first.kill()
    assert role in vault_engines.pg_roles(), "the crash left the role behind"
    second = await bot_processes.start(env)  # revokes what its predecessor left, then serves
    assert role not in vault_engines.pg_roles()
    assert sleeping_role(app.dsn) is None, "the revocation ended the action's session too"
    [orphan] = [r for r in AuditFile(second.data_dir).rows("credential.revoke")
                if r["data"].get("orphaned")]
    assert orphan["data"]["grants"][0]["username"] == role and orphan["data"]["revoked_at"]
    assert [e for e in second.logs() if e.get("event") == "credentials.orphans_revoked"]
    assert await second.terminate() == 0


WORKER = """
import asyncio, json, sys
from pydantic import SecretStr
from sandbox.credentials import CredentialBroker, VaultConfig
from tools.base import SecretRef

async def main():
    addr, token, role = sys.stdin.readline().split()
    config = VaultConfig(addr=addr, token=SecretStr(token), ttl_margin_s=0)
    lease = await CredentialBroker(config).mint("run-k", "c", SecretRef.login("db", role), 3)
    values = {k: v.get_secret_value() for k, v in lease.values.items()}
    print("LOGIN", json.dumps(values), flush=True)  # structlog writes to stdout too
    await asyncio.sleep(3600)  # "mid-action", until the SIGKILL

asyncio.run(main())
"""


async def test_a_worker_sigkilled_mid_action_leaves_no_usable_credential_after_the_ttl(
        vault_engines):
    """Nobody restarts: Vault ends the user when the action's token expires (TTL ≈ timeout)."""
    worker = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    token = vault_engines.parent_token()
    worker.stdin.write(f"{vault_engines.openbao.addr} {token} {PG_READ}\n")
    worker.stdin.flush()
    line = ""
    while not line.startswith("LOGIN "):
        line = await asyncio.to_thread(worker.stdout.readline)
        assert line, "the worker exited before it minted"
    login = json.loads(line.removeprefix("LOGIN "))
    user, password = login["db_username"], login["db_password"]
    host, port = vault_engines.pg_host_port

    def logs_in() -> bool:
        try:
            psycopg.connect(host=host, port=port, dbname="postgres", user=user,
                            password=password, connect_timeout=5).close()
            return True
        except psycopg.OperationalError:
            return False

    assert logs_in()
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    await wait_until(lambda: user not in vault_engines.pg_roles(), 30,
                     lambda: f"{user} outlived its token's TTL")
    assert not logs_in()


@pytest.fixture
def issued_passwords(vault_engines):
    """Every password OpenBao hands out from now on, read from its raw audit device (a test-only
    file opsbot never sees). Call the yielded function at the end."""
    path = vault_engines.openbao.raw_audit_path
    start = path.stat().st_size

    def passwords() -> set[str]:
        with path.open() as log:
            log.seek(start)
            entries = [json.loads(line) for line in log if line.strip()]
        return {e["response"]["data"]["password"] for e in entries
                if e["type"] == "response" and "/creds/" in e["request"]["path"]
                and (e["response"].get("data") or {}).get("password")}

    return passwords


async def test_dynamic_passwords_appear_nowhere(
        bot_processes: BotProcesses, slack_emulator: SlackEmulator,  # noqa: F811
        openai_emulator: OpenAIEmulator, vault_engines, app, sandbox_image,  # noqa: F811
        issued_passwords, tmp_path):
    openai_emulator.push(tool_call("postgres__activity", {"limit": 5}),  # tier 0: runs unasked
                         text("Nothing stands out in the activity."))
    data = tmp_path / "data"
    env = bot_env(slack_emulator, data, vault_engines.redis.url, sandbox_image,
                  VAULT_ADDR=vault_engines.openbao.addr, VAULT_TOKEN=vault_engines.parent_token(),
                  OPSBOT_REDIS_READ_ROLE=REDIS_READ, OPSBOT_REDIS_WRITE_ROLE=REDIS_WRITE,
                  OPSBOT_POSTGRES_URL=vault_engines.pg_url(app.dsn.rsplit("/", 1)[-1]),
                  OPSBOT_POSTGRES_READ_ROLE=PG_READ, OPSBOT_POSTGRES_WRITE_ROLE=PG_WRITE,
                  OPSBOT_EMBEDDINGS="openai", OPSBOT_LOG_LEVEL="debug", **openai_emulator.env())
    bot = await bot_processes.start(env)
    async with SlackClient(bot.events_url) as client:
        h = ProcessHarness(bot, slack_emulator, client)
        for index, command in enumerate(["redis info", "postgres activity",
                                         'postgres query sql="select * from nowhere"',
                                         "why is the database slow?"]):
            await h.command(command)
            await h.report(await h.run_thread(index))
    assert await bot.terminate() == 0

    passwords = issued_passwords()
    assert len(passwords) == 4, "redis info, postgres activity, the failing query, the LLM's"
    assert [e for e in bot.logs() if e.get("event") == "vault.lease.minted"], "logs captured"
    assert openai_emulator.requests(), "the LLM was asked"
    leaks = {where: [p for p in passwords if p in text] for where, text in {
        "logs": bot.stderr(), "slack": slack_emulator.all_text(),
        "llm": openai_emulator.all_text(),
        **{str(f): f.read_bytes().decode(errors="replace") for f in data.rglob("*")
           if f.is_file()}}.items()}
    assert not {where: found for where, found in leaks.items() if found}
