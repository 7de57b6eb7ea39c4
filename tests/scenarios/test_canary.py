"""A canary secret planted in Vault never leaves opsbot: not in its logs, not in Slack, not in
its data files (audit and checkpoint databases, their WAL files), not in what the LLM is shown.

The canary is the Redis password (read per action from OpenBao) and also the value of a Redis
key, so it comes back through a tool's output too: a typed ``redis get`` and an LLM-planned one
both carry it out of the sandbox, and it must be scrubbed everywhere before it is written or
sent. The bot is a real process logging at debug level; every file in its data directory is
read as raw bytes while it runs (WAL present) and again after it stops.
"""

import secrets
from pathlib import Path

import pytest

from tests.fakes.openai import OpenAIEmulator, openai_emulator, text, tool_call  # noqa: F401
from tests.fakes.payloads import SIGNING_SECRET, SlackClient
from tests.fakes.slack import SlackEmulator, slack_emulator  # noqa: F401 (fixture)
from tests.scenarios.harness import RUN_ID
from tests.scenarios.process import (  # noqa: F401 (fixture)
    BotProcesses,
    ProcessHarness,
    bot_env,
    bot_processes,
)
from tests.scenarios.test_vault_e2e import SECRET_PATH, SECRET_REF, parent_token
from tests.services.redis import private_redis
from tools.secrets import MASK

pytestmark = pytest.mark.docker
CANARY = "canary" + secrets.token_hex(16)
KEY = "deploy:token"
SHAPED_KEY = "deploy:creds"
# Secrets nobody registered: only their shape gives them away (issue 9 item 9). Plus opsbot's
# own signing secret, which has no shape: it is redacted because opsbot is configured with it.
AWS_ID = "AKIA" + secrets.token_hex(8).upper()
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + secrets.token_hex(8) + "Zq"  # 40 characters
SLACK_TOKEN = f"xoxb-{secrets.randbelow(10**12)}-{secrets.token_hex(12)}"
PEM_BODY = secrets.token_hex(24)
SHAPED = {
    "aws-access-key-id": AWS_ID, "aws-secret-access-key": AWS_SECRET,
    "slack-token": SLACK_TOKEN,
    "private-key": (f"-----BEGIN OPENSSH PRIVATE KEY-----\n{PEM_BODY}\n"
                    "-----END OPENSSH PRIVATE KEY-----"),
}
SHAPED_VALUE = (f"aws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_SECRET}\n"
                f"slack = {SLACK_TOKEN}\nsigning = {SIGNING_SECRET}\n{SHAPED['private-key']}\n")
NEEDLES = [CANARY, AWS_ID, AWS_SECRET, SLACK_TOKEN, PEM_BODY, SIGNING_SECRET]


@pytest.fixture
def canary_redis(tmp_path: Path):
    with private_redis(tmp_path / "redis", password=CANARY) as server:
        server.client().set(KEY, CANARY)
        server.client().set(SHAPED_KEY, SHAPED_VALUE)
        yield server


def files_holding(directory: Path, needle: bytes) -> dict[str, bool]:
    """Every file under ``directory`` → whether its raw bytes contain ``needle``."""
    return {str(p.relative_to(directory)): needle in p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


async def test_canary_secret_appears_nowhere(
        bot_processes: BotProcesses, slack_emulator: SlackEmulator,  # noqa: F811
        openai_emulator: OpenAIEmulator, canary_redis, openbao, sandbox_image,  # noqa: F811
        tmp_path):
    openbao.put(SECRET_PATH, password=CANARY)
    openai_emulator.push([tool_call("redis__get", {"key": KEY}),
                          tool_call("redis__get", {"key": SHAPED_KEY})],
                         text("The key holds a credential; I did not repeat it."))
    data = tmp_path / "data"
    env = bot_env(slack_emulator, data, canary_redis.url, sandbox_image,
                  VAULT_ADDR=openbao.addr, VAULT_TOKEN=parent_token(openbao),
                  OPSBOT_REDIS_PASSWORD_SECRET=SECRET_REF, OPSBOT_EMBEDDINGS="openai",
                  OPSBOT_LOG_LEVEL="debug", **openai_emulator.env())
    bot = await bot_processes.start(env)
    async with SlackClient(bot.events_url) as client:
        h = ProcessHarness(bot, slack_emulator, client)
        await h.command(f"redis get {KEY}")
        typed = await h.report(await h.run_thread())
        await h.command(f"redis get {SHAPED_KEY}")
        shaped = await h.report(await h.run_thread(1))
        await h.command(f"why does {KEY} look wrong?")
        planned = await h.report(await h.run_thread(2))

    assert f"GET {KEY}" in typed.text and MASK in typed.text, "the value came back, scrubbed"
    assert "done" in planned.text and "did not repeat it" in planned.text
    shown = [r["content"] for r in openai_emulator.requests()[-1].body["messages"]
             if r["role"] == "tool"]
    assert shown and MASK in shown[0], "the model saw the tool result, scrubbed"
    for name in SHAPED:  # each shape is named where it was cut, in Slack and for the model
        assert f"[redacted:{name}]" in shaped.text and f"[redacted:{name}]" in shown[1], name
    assert f"signing = {MASK}" in shaped.text, "opsbot's own configured secret"
    assert openai_emulator.errors == []
    while_running = {needle: files_holding(data, needle.encode()) for needle in NEEDLES}
    assert "opsbot.sqlite-wal" in while_running[CANARY]
    assert "checkpoints.sqlite-wal" in while_running[CANARY]
    minted = [e for e in bot.logs() if e.get("event") == "vault.lease.minted"]
    assert len(minted) == 4 and all(e["level"] == "info" for e in minted), "logs were captured"
    assert len({RUN_ID.search(m.text).group(1) for m in (typed, shaped, planned)}) == 3

    assert await bot.terminate() == 0
    for needle in NEEDLES:
        assert not [name for name, found in while_running[needle].items() if found], needle
        assert not [name for name, found in files_holding(data, needle.encode()).items()
                    if found], needle
        assert needle not in bot.stderr()
        assert needle not in slack_emulator.all_text()
        assert needle not in openai_emulator.all_text()
