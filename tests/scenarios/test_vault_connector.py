"""The Vault connector end to end: a real opsbot process, the Slack and LLM emulators, the
session OpenBao and the sandbox. A secret's value (a canary) never appears anywhere — not in
Slack, not in what the model is shown, not in the audit log or any data file, not in the logs —
while its metadata is shown, typed and planned by the model.
"""

from __future__ import annotations

import secrets

import pytest

from tests.fakes.openai import OpenAIEmulator, openai_emulator, text, tool_call  # noqa: F401
from tests.fakes.payloads import SlackClient
from tests.fakes.slack import SlackEmulator, slack_emulator  # noqa: F401 (fixture)
from tests.scenarios.process import (  # noqa: F401 (fixture)
    AuditFile,
    BotProcesses,
    ProcessHarness,
    bot_env,
    bot_processes,
)
from tests.scenarios.test_canary import files_holding
from tests.scenarios.test_vault_e2e import parent_token

pytestmark = pytest.mark.docker
CANARY = "vaultcanary" + secrets.token_hex(16)


async def test_secret_metadata_is_shown_and_its_value_appears_nowhere(
        bot_processes: BotProcesses, slack_emulator: SlackEmulator,  # noqa: F811
        openai_emulator: OpenAIEmulator, redis_server, openbao, sandbox_image,  # noqa: F811
        tmp_path):
    openbao.put("kv/data/payments/stripe", api_key="old-" + CANARY)
    openbao.put("kv/data/payments/stripe", api_key=CANARY)
    openai_emulator.push([tool_call("vault__secrets", {"prefix": "payments"}),
                          tool_call("vault__metadata", {"path": "payments/stripe"})],
                         text("payments/stripe is at version 2; I did not read its value."))
    data = tmp_path / "data"
    env = bot_env(slack_emulator, data, redis_server.url, sandbox_image,
                  VAULT_ADDR=openbao.addr, VAULT_TOKEN=parent_token(openbao),
                  OPSBOT_VAULT_KV_MOUNTS="kv", OPSBOT_EMBEDDINGS="openai",
                  OPSBOT_LOG_LEVEL="debug", **openai_emulator.env())
    bot = await bot_processes.start(env)
    async with SlackClient(bot.events_url) as client:
        h = ProcessHarness(bot, slack_emulator, client)
        await h.command("vault metadata payments/stripe")
        typed = await h.report(await h.run_thread())
        await h.command("is the stripe key rotated?")
        planned = await h.report(await h.run_thread(1))

    assert "payments/stripe: version 2" in typed.text and "v1: created" in typed.text
    assert "did not read its value" in planned.text
    shown = [m["content"] for m in openai_emulator.requests()[-1].body["messages"]
             if m["role"] == "tool"]
    assert shown[0].endswith("\nstripe") and "version 2" in shown[1], "the model saw the metadata"
    minted = [e for e in bot.logs() if e.get("event") == "vault.lease.minted"]
    kinds = [g["kind"] for e in minted for g in e["grants"]]
    assert kinds == ["vault", "vault", "vault"], "a token of its own for each action"
    assert openai_emulator.errors == []

    assert await bot.terminate() == 0
    assert not [n for n, found in files_holding(data, CANARY.encode()).items() if found]
    assert CANARY not in bot.stderr()
    assert CANARY not in slack_emulator.all_text()
    assert CANARY not in openai_emulator.all_text()
    leases = AuditFile.of(env).rows("credential.lease")
    scopes = [g["scopes"] for r in leases for g in r["data"]["grants"]]
    assert ["kv/metadata/payments/stripe=read"] in scopes and ["kv/metadata/payments=list"] in scopes
    assert CANARY not in str(leases) + str(AuditFile.of(env).rows("sandbox.exec"))
