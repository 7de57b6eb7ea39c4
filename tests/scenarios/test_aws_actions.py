"""AWS end to end: the whole bot with the Slack emulator, boto3 running in the sandbox and
reaching moto's HTTP server only through the egress forwarder, STS sessions assumed per action
from a base credential in the session OpenBao, and policy reading the instances' tags from the
host-side listing.
"""

from __future__ import annotations

import pytest

from tests.fakes.slack import SlackEmulator, slack_emulator  # noqa: F401 (fixture)
from tests.scenarios.harness import APPROVER, POLICY, RUN_ID, harness, settings_for
from tests.scenarios.test_vault_e2e import parent_token
from tests.services.moto import BASE_PATH, REGION, ROLE_ARN

pytestmark = pytest.mark.docker
RULES = """\
rules:
  - name: prod-instances-stay-up
    match: {toolset: aws, action: [stop, reboot], target: {kind: aws, tag.env: prod}}
    deny: "Production instances are stopped through the change process, not from chat."
"""


async def test_describe_then_stop_is_gated_approved_and_prod_is_denied_by_tag(
        slack_emulator: SlackEmulator, moto_aws, openbao, redis_server,  # noqa: F811
        sandbox_image, tmp_path):
    openbao.put(BASE_PATH, **moto_aws.base)
    prod = moto_aws.instance(Name="api-1", env="prod")
    dev = moto_aws.instance(Name="scratch-1", env="dev")
    settings = settings_for(
        slack_emulator, redis_server.url, tmp_path / "data", policy_text=POLICY + RULES,
        vault_addr=openbao.addr, vault_token=parent_token(openbao),
        connector_env={"OPSBOT_AWS_ROLE_ARN": ROLE_ARN, "OPSBOT_AWS_REGION": REGION,
                       "OPSBOT_AWS_BASE_CREDENTIAL": BASE_PATH,
                       "OPSBOT_AWS_ENDPOINT_URL": moto_aws.url})
    async with harness(settings, slack_emulator) as h:
        await h.command(f"aws instances instance_ids=[{prod},{dev}]")
        # boto3 parses its service models in a cold container: seconds on a loaded host
        described = await h.report(await h.run_thread(), timeout=120)
        pool = h.bot.runtime.sandbox.pool
        (kind,) = [k for k in pool.kinds() if k.family == "aws"]  # the first call added it
        await pool.wait_ready()
        assert "tools.aws_ops:warm" in kind.command and pool.ready(kind.name) == 1, \
            "a container that parsed boto3's models waits for the next AWS call"
        await h.command(f"aws stop instance_ids=[{prod}]")
        denied = await h.report(await h.run_thread(1), timeout=120)
        await h.command(f"aws stop instance_ids=[{dev}]")
        thread = await h.run_thread(2)
        card = await h.card(thread, timeout=120)
        assert moto_aws.state(dev) == "running", "nothing ran before the approval"
        await h.click(card, APPROVER)
        stopped = await h.report(thread, timeout=120)
        story = await h.bot.runtime.audit.story(RUN_ID.search(stopped.text).group(1))

    assert prod in described.text and dev in described.text and "env=prod" in described.text
    assert "prod-instances-stay-up" in denied.text and moto_aws.state(prod) == "running"
    assert f"{dev}: running → stopping" in stopped.text and moto_aws.state(dev) == "stopped"
    card_text = " ".join(b.get("text", {}).get("text", "") for b in card.blocks)
    assert "scratch-1" in card_text, "the card previews the instance"
    grants = [g for r in story if r["kind"] == "credential.lease" for g in r["data"]["grants"]]
    assert [g["actions"] for g in grants] == [["ec2:DescribeInstances"], ["ec2:StopInstances"]]
    execs = [r["data"] for r in story if r["kind"] in ("sandbox.preview", "sandbox.exec")]
    assert len(execs) == 2 and all(e["container"] and e["status"] == "ok" for e in execs)
