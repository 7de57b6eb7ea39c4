"""Shell steps end to end: the whole bot, the commands file, the sandbox reaching a real sshd
(in its own network namespace) through its egress forwarder with a certificate OpenBao signed
for the action. A tier-3 command waits for an approver; nothing reaches sshd before that.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.fakes.slack import SlackEmulator, slack_emulator  # noqa: F401 (fixture)
from tests.scenarios.harness import APPROVER, RUN_ID, harness, settings_for
from tests.services.vault_engines import SSH_SIGN

pytestmark = pytest.mark.docker
FLAG = Path("/tmp") / f"opsbot-flag-{secrets.token_hex(6)}"
COMMANDS = f"""\
commands:
  - name: echo
    description: Print one word.
    command: echo {{word}}
    params: {{word: {{}}}}
    tier: 0
    hosts: ["10.213.*"]
  - name: raise-flag
    description: Raise the maintenance flag (a change; needs approval).
    command: touch {FLAG}
    tier: 3
    hosts: ["10.213.*"]
"""


async def test_declared_commands_run_over_ssh_from_the_sandbox(
        slack_emulator: SlackEmulator, vault_engines, sshd, sandbox_image, tmp_path,  # noqa: F811
        capsys):
    (tmp_path / "commands.yml").write_text(COMMANDS)
    (tmp_path / "known_hosts").write_text(sshd.known_hosts)
    settings = settings_for(slack_emulator, vault_engines.redis.url, tmp_path / "data",
                            vault_addr=vault_engines.openbao.addr,
                            vault_token=vault_engines.parent_token(),
                            commands=tmp_path / "commands.yml", ssh_role=SSH_SIGN,
                            ssh_known_hosts=tmp_path / "known_hosts", ssh_user=sshd.user)
    async with harness(settings, slack_emulator) as h:
        await h.command(f"shell echo host={sshd.address} word=hello-from-the-sandbox")
        echoed = await h.report(await h.run_thread())
        await h.command(f"shell raise-flag host={sshd.address}")
        thread = await h.run_thread(1)
        card = await h.card(thread)
        accepted_before = sshd.log().count("Accepted publickey")
        assert not FLAG.exists(), "nothing ran before the approval"
        await h.click(card, APPROVER)
        raised = await h.report(thread)
        story = await h.bot.runtime.audit.story(RUN_ID.search(raised.text).group(1))

    assert "hello-from-the-sandbox" in echoed.text and "done" in echoed.text
    assert f"touch {FLAG}" in h.card_state(card).text or f"touch {FLAG}" in str(card.blocks)
    assert FLAG.exists() and "done" in raised.text
    assert sshd.log().count("Accepted publickey") == accepted_before + 1
    [lease] = [r["data"] for r in story if r["kind"] == "credential.lease"]
    [grant] = lease["grants"]
    assert grant["kind"] == "ssh" and grant["principal"] == "opsbot-sandbox-execute"
    assert grant["valid_until"] and grant["revocable"] is False
    header = "OPENSSH PRIVATE KEY"
    db = (tmp_path / "data" / "opsbot.sqlite").read_bytes()
    assert header not in h.slack.all_text() and header.encode() not in db
    assert header not in capsys.readouterr().out
    FLAG.unlink()
