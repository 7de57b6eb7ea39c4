"""The Docker connector through the whole bot: a restart of a labelled container is previewed,
approved and done through the filtering proxy; a rule on ``label.env: prod`` sees the labels of
exactly the container named, so a prod container cannot be stopped from chat.
"""

from __future__ import annotations

import secrets

import docker
import pytest

from tests.fakes.slack import SlackEmulator, slack_emulator  # noqa: F401 (fixture)
from tests.scenarios.harness import APPROVER, POLICY, RUN_ID, harness, settings_for

pytestmark = pytest.mark.docker
SOCKET = "/var/run/docker.sock"
PROD_RULE = POLICY + """\
rules:
  - name: prod-containers
    match: {target: {kind: container, label.env: prod}, tier: [3, 4]}
    deny: "Production containers change through the deploy pipeline, not from chat."
"""


@pytest.fixture
def pair(docker_client: docker.DockerClient, sandbox_image: str):
    tag = secrets.token_hex(4)
    made = [docker_client.containers.run(
        sandbox_image, ["python3", "-c", "import time; print('up', flush=True); time.sleep(3600)"],
        name=f"{role}-{tag}", detach=True, labels={"env": env}, network_mode="none")
        for role, env in (("web", "staging"), ("db", "prod"))]
    yield made
    for container in made:
        container.remove(force=True)


async def test_restart_is_previewed_approved_and_prod_is_out_of_reach(
        slack_emulator: SlackEmulator, pair, sandbox_image, tmp_path):  # noqa: F811
    web, db = pair
    web.reload()
    started = web.attrs["State"]["StartedAt"]
    settings = settings_for(slack_emulator, "redis://127.0.0.1:1/0", tmp_path / "data",
                            policy_text=PROD_RULE, docker_socket=SOCKET)
    async with harness(settings, slack_emulator) as h:
        await h.command(f"docker logs name={web.name} tail=5")
        logs = await h.report(await h.run_thread())
        await h.command(f"docker restart name={web.name} wait_s=1")
        thread = await h.run_thread(1)
        card = await h.card(thread)
        web.reload()
        assert web.attrs["State"]["StartedAt"] == started, "nothing ran before the approval"
        await h.click(card, APPROVER)
        restarted = await h.report(thread)
        await h.command(f"docker stop name={db.name}")
        denied = await h.report(await h.run_thread(2))
        story = await h.bot.runtime.audit.story(RUN_ID.search(restarted.text).group(1))

    assert " up" in logs.text and "done" in logs.text
    preview = next(b["text"]["text"] for b in card.blocks
                   if "*Preview*" in b.get("text", {}).get("text", ""))
    assert web.name in preview and "env=staging" in preview
    web.reload()
    assert web.attrs["State"]["StartedAt"] != started and f"{web.name}" in restarted.text
    assert "Production containers change through the deploy pipeline" in denied.text
    db.reload()
    assert db.status == "running"
    grants = [g for r in story if r["kind"] == "credential.lease" for g in r["data"]["grants"]]
    assert [g["rules"] for g in grants] == [["GET /containers/{id}/json"],  # preview
                                            ["POST /containers/{id}/restart?t"],
                                            ["GET /containers/{id}/json"]]  # the check
    shown = "".join(b.get("text", {}).get("text", "") for b in restarted.blocks)
    assert "Check after acting: fixed* (the container is running)" in shown
    assert all(g["containers"] == [web.id] for g in grants)
