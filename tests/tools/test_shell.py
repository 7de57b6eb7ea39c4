"""Shell steps over SSH against a real sshd (in its own network namespace) that trusts the
session OpenBao's SSH CA. Actions run in-process here with certificates the real broker had
signed; the sandboxed path through the whole bot is in tests/scenarios/test_shell_ssh.py.

What sshd did is read from sshd's own log; what a command did, from the host's filesystem.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from sandbox.credentials import CredentialBroker, VaultConfig
from tests.fakes.server import wait_until
from tests.services.vault_engines import SSH_SIGN
from tools.base import ActionContext, Status, Tier
from tools.catalog import Call, CallError, Catalog
from tools.shell import ShellConfig, build_toolset, load_commands

MARKER = Path("/tmp") / f"opsbot-injected-{secrets.token_hex(6)}"
COMMANDS = """\
commands:
  - name: echo
    description: Print one word.
    command: echo {word}
    params: {word: {description: the word}}
    tier: 0
    hosts: ["10.213.*"]
  - name: say
    description: Print any printable text, verbatim.
    command: printf '%s\\n' {text}
    params: {text: {pattern: "[ -~]{1,200}"}}
    tier: 0
    hosts: ["10.213.*"]
  - name: lines
    description: Print n lines of x.
    command: "yes x | head -n {n}"
    params: {n: {type: int, min: 1, max: 100000}}
    tier: 0
    hosts: ["10.213.*"]
  - name: nap
    description: Sleep.
    command: sleep {seconds}
    params: {seconds: {type: choice, choices: ["1", "30"]}}
    tier: 0
    timeout_s: 2
    hosts: ["10.213.*"]
  - name: fail
    description: Exit 3.
    command: sh -c 'echo broken >&2; exit 3'
    tier: 0
    hosts: ["10.213.*"]
  - name: drain
    description: A production change (tier 4); this host accepts no tier-4 principal.
    command: echo drained
    tier: 4
    hosts: ["10.213.*"]
"""


def config_for(sshd, known_hosts: str | None = None, **more) -> ShellConfig:
    return load_commands(COMMANDS, ssh_role=SSH_SIGN, user=sshd.user,
                         known_hosts=known_hosts or sshd.known_hosts, **more)


@pytest.fixture(scope="module")
def broker(vault_engines) -> CredentialBroker:
    token = SecretStr(vault_engines.parent_token())
    return CredentialBroker(VaultConfig(addr=vault_engines.openbao.addr, token=token,
                                        ttl_margin_s=1))


async def run(config: ShellConfig, broker: CredentialBroker, action: str, keep: dict | None = None,
              **params):
    """What the execute node does, minus the container: mint, run, revoke."""
    catalog = Catalog([build_toolset(config)], {"shell": config})
    resolved = catalog.resolve(Call(id="s", toolset="shell", action=action, params=params))
    lease = await broker.mint("run-sh", "s", resolved.secrets, resolved.action.timeout)
    values = {k: v.get_secret_value() for k, v in lease.values.items()}
    if keep is not None:
        keep.update(values)
    try:
        ctx = ActionContext(config=resolved.config.model_dump(mode="json"), secrets=values)
        return await asyncio.to_thread(resolved.action.run, resolved.params, ctx)
    finally:
        await broker.revoke(lease)


def connections(sshd) -> int:
    return sshd.log().count("Connection from ")


async def test_a_declared_command_runs_with_a_certificate_signed_for_the_action(sshd, broker):
    result = await run(config_for(sshd), broker, "echo", host=sshd.address, word="hello")
    assert result.status is Status.OK and result.output == "hello"
    assert result.invocation == f"ssh {sshd.user}@{sshd.address} echo hello"
    assert "Accepted publickey for opsbot-ssh" in sshd.log()
    assert "ED25519-CERT" in sshd.log() and "opsbot-action" in sshd.log()  # the cert's key id


async def test_values_are_quoted_so_nothing_becomes_a_second_command(sshd, broker):
    text = f"$(touch {MARKER}); `touch {MARKER}` && touch {MARKER} | echo 'x\" y"
    result = await run(config_for(sshd), broker, "say", host=sshd.address, text=text)
    assert result.status is Status.OK and result.output == text
    assert not MARKER.exists()


@pytest.mark.parametrize("params", [
    {"word": "; rm -rf /"}, {"word": f"$(touch {MARKER})"}, {"word": f"`touch {MARKER}`"},
    {"word": "a\nb"}, {"word": "ok\n"}, {"word": "a b"}, {"word": "-rf"}, {"word": "x|y"},
    {"word": "hi", "host": "10.99.0.1"}, {"word": "hi", "host": "10.213.0.9;id"},
    {"word": "hi", "extra": "1"},
], ids=lambda p: repr(p)[:40])
async def test_injection_attempts_are_refused_before_ssh(sshd, params):
    before = connections(sshd)
    catalog = Catalog([build_toolset(config_for(sshd))], {"shell": config_for(sshd)})
    with pytest.raises(CallError, match="Bad parameters for `shell echo`"):
        catalog.resolve(Call(id="x", toolset="shell", action="echo",
                             params={"host": sshd.address, **params}))
    assert connections(sshd) == before and not MARKER.exists()


async def test_an_undeclared_command_is_refused_before_ssh(sshd):
    catalog = Catalog([build_toolset(config_for(sshd))], {"shell": config_for(sshd)})
    with pytest.raises(CallError, match="`shell` has no action `rm`"):
        catalog.resolve(Call(id="x", toolset="shell", action="rm",
                             params={"host": sshd.address}))


async def test_a_host_without_a_pinned_key_is_refused_and_a_wrong_key_fails(sshd, broker,
                                                                             tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    other = " ".join((tmp_path / "k.pub").read_text().split()[:2])
    wrong = config_for(sshd, known_hosts=f"{sshd.address} {other}\n")
    result = await run(wrong, broker, "echo", host=sshd.address, word="hi")
    assert result.error == f"{sshd.address} presented a host key that is not pinned for it; " \
                           "nothing ran."
    unpinned = config_for(sshd, known_hosts="10.213.250.250 " + sshd.host_key + "\n")
    with pytest.raises(CallError, match="has no pinned host key in OPSBOT_SSH_KNOWN_HOSTS"):
        Catalog([build_toolset(unpinned)], {"shell": unpinned}).resolve(
            Call(id="x", toolset="shell", action="echo", params={"host": sshd.address,
                                                                 "word": "hi"}))


async def test_the_principal_follows_the_tier_and_the_host_decides(sshd, broker):
    config = config_for(sshd)
    assert [r.params for r in build_toolset(config).secrets(
        build_toolset(config).action("drain"), None, config)][0] == (
        ("principal", "opsbot-production"),)
    result = await run(config, broker, "drain", host=sshd.address)
    assert result.status is Status.ERROR
    assert result.error == f"{sshd.address} refused the action's SSH certificate (permission " \
                           "denied); nothing ran."
    assert "Certificate does not contain an authorized principal" in sshd.log()


async def test_output_is_capped_failures_and_timeouts_are_values(sshd, broker):
    config = config_for(sshd, output_cap=2048)
    capped = await run(config, broker, "lines", host=sshd.address, n=50000)
    assert capped.output.endswith("… (output cut at 2048 bytes)") and len(capped.output) < 2200
    failed = await run(config, broker, "fail", host=sshd.address)
    assert failed.error == "exit status 3: broken"
    slow = await run(config, broker, "nap", host=sshd.address, seconds="30")
    assert slow.error == f"the command on {sshd.address} did not finish in time and was stopped."


async def test_the_certificate_is_rejected_after_the_action(sshd, broker, tmp_path):
    """Vault cannot revoke an SSH certificate: it dies at its TTL (the command's timeout plus
    a margin), and the private key dies with the action. Here: the action's own key and
    certificate, kept by the test, are refused by sshd once the TTL has passed."""
    kept: dict = {}
    done = await run(config_for(sshd), broker, "nap", keep=kept, host=sshd.address, seconds="1")
    assert done.status is Status.OK
    key, cert = tmp_path / "id", tmp_path / "id-cert.pub"
    key.write_text(kept["ssh_private_key"])
    key.chmod(0o600)
    cert.write_text(kept["ssh_certificate"] + "\n")
    (tmp_path / "known_hosts").write_text(sshd.known_hosts)

    def logs_in() -> bool:
        done = subprocess.run(
            ["ssh", "-i", str(key), "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}",
             "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", f"{sshd.user}@{sshd.address}",
             "true"], capture_output=True, timeout=20, check=False)
        return done.returncode == 0

    await wait_until(lambda: not logs_in(), 30, lambda: "the certificate outlived its TTL")
    assert "expired" in sshd.log() or "Certificate invalid" in sshd.log()


@pytest.mark.parametrize(
    "text,message",
    [
        ("commands: []", "Tuple should have at least 1 item"),
        ("nope: 1", "the file must hold a `commands:` list"),
        ("commands:\n  - {name: x, description: d, command: 'echo {a}', tier: 0, hosts: [h]}",
         "the template's placeholders ['a'] must be exactly the declared params []"),
        ("commands:\n  - {name: x, description: d, command: \"echo '{a}'\", params: {a: {}},"
         " tier: 0, hosts: [h]}", "a placeholder sits inside quotes"),
        ("commands:\n  - {name: x, description: d, command: 'echo {a}', params: {a: {type: "
         "choice}}, tier: 0, hosts: [h]}", "a choice param needs `choices`"),
        ("commands:\n  - {name: x, description: d, command: echo, tier: 9, hosts: [h]}",
         "Input should be 0, 1, 2, 3 or 4"),
    ],
)
def test_bad_commands_files_are_refused(text, message):
    with pytest.raises((ValueError, ValidationError), match=re.escape(message)):
        load_commands(text, ssh_role=SSH_SIGN, known_hosts="")


def test_the_approver_reads_the_exact_command():
    config = load_commands(COMMANDS, ssh_role=SSH_SIGN, known_hosts="10.213.1.2 ssh-ed25519 K")
    toolset = build_toolset(config)
    action = toolset.action("say")
    params = action.params.model_validate({"host": "10.213.1.2", "text": "it's ok"})
    assert action.summary(params) == "Run `printf '%s\\n' 'it'\"'\"'s ok'` on 10.213.1.2 as opsbot"
    assert toolset.action("drain").tier is Tier.PRODUCTION
    target = toolset.target(action, params, config)
    assert (target.kind, target.name, target.attrs["command"]) == ("ssh_host", "10.213.1.2",
                                                                    "say")
