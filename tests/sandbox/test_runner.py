"""The real runner against a real Docker engine and a real redis-server.

Container settings are asserted from ``docker inspect`` captured while the action runs (from
the progress callback, which the runner awaits before it removes anything).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time

import docker
import pytest
from structlog.testing import capture_logs

from sandbox.config import SandboxConfig
from sandbox.hardening import LABEL, NO_RESOLVER
from sandbox.protocol import SandboxRequest
from sandbox.runner import SandboxRunner
from tests.services.docker import leftovers, session_instance
from tests.services.redis import start_redis
from tools.base import Endpoint, Status

pytestmark = pytest.mark.docker

BRIDGE_OPTION = "com.docker.network.bridge.name"
HARDENING_KEYS = ("ReadonlyRootfs", "CapDrop", "SecurityOpt", "Memory", "MemorySwap",
                  "NanoCpus", "PidsLimit", "Tmpfs", "LogConfig", "Privileged", "Ulimits", "Dns")


def redis_request(server, call_id: str, **extra) -> SandboxRequest:
    return SandboxRequest(
        run_id="run-1", call_id=call_id, toolset="redis", action="info",
        params={"section": "server"}, config={"url": server.url},
        egress=[Endpoint(host=server.host, port=server.port)], **extra,
    )


def snapshot(client: docker.DockerClient, call_id: str) -> dict:
    """Inspect of the call's container and its network, taken while the action runs."""
    [container] = client.containers.list(all=True, filters={"label": f"{LABEL}.call_id={call_id}"})
    network_name = container.attrs["HostConfig"]["NetworkMode"]
    network = client.networks.get(network_name).attrs if network_name != "none" else None
    return {"container": container.attrs, "network": network}


def bridge_rules(chain: str, bridge: str) -> list[str]:
    """The firewall rules of one sandbox bridge, as ``iptables -S`` prints them."""
    listing = subprocess.run(["iptables", "-w", "-S", chain], capture_output=True, text=True,
                             check=False).stdout
    return sorted(line for line in listing.splitlines() if f" -i {bridge} " in line)


@pytest.fixture
async def cold_runner(sandbox_image):
    runner = await SandboxRunner.start(
        SandboxConfig(instance=session_instance("-c"), image=sandbox_image, warm_pool=0)
    )
    yield runner
    await runner.close()


async def test_redis_info_runs_hardened_and_leaves_nothing(cold_runner, redis_server,
                                                           docker_client):
    seen: dict = {}
    progress: list[str] = []

    async def on_progress(text: str) -> None:
        progress.append(text)
        seen.update(await asyncio.to_thread(snapshot, docker_client, "info-1"))

    outcome = await cold_runner.run(redis_request(redis_server, "info-1"), on_progress)

    assert outcome.result.status is Status.OK, outcome.result.error
    assert "redis_version:" in outcome.result.output
    assert progress == ["Running `redis info` in the sandbox"]
    host = seen["container"]["HostConfig"]
    assert host["NetworkMode"] == outcome.network != "none"
    assert seen["network"]["Internal"] is True
    assert seen["container"]["Config"]["User"] == "65534:65534"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Privileged"] is False
    assert host["Memory"] == host["MemorySwap"] == 256 << 20
    assert host["PidsLimit"] == 128 and host["NanoCpus"] == 10**9
    assert "size=64m" in host["Tmpfs"]["/tmp"] and "noexec" in host["Tmpfs"]["/tmp"]
    assert host["LogConfig"]["Type"] == "none"
    assert host["Dns"] == [NO_RESOLVER], "Docker's embedded resolver has no usable upstream"
    assert seen["container"]["Config"]["Labels"][f"{LABEL}.action"] == "redis info"
    assert set(outcome.phases) >= {"network", "create", "attach", "start", "exec"}
    await cold_runner.settle()
    assert leftovers(docker_client, "info-1") == []


async def test_a_cold_box_takes_a_network_made_ahead_and_spares_go_at_close(
        sandbox_image, redis_server, docker_client):
    """Issue 16: the cold path skips the network's creation; a spare is used once, replaced in
    the background, and removed with the runner."""
    instance = session_instance("-s")
    runner = await SandboxRunner.start(
        SandboxConfig(instance=instance, image=sandbox_image, warm_pool=0, spare_networks=1))
    try:
        await runner.provisioner.spares.wait_ready()
        [spare] = instance_networks(docker_client, instance)

        outcome = await runner.run(redis_request(redis_server, "spare-1"))

        assert outcome.result.status is Status.OK, outcome.result.error
        assert outcome.network == spare
        await runner.settle()
        await runner.provisioner.spares.wait_ready()
        [replacement] = instance_networks(docker_client, instance)
        assert replacement != spare
    finally:
        await runner.close()
    assert instance_networks(docker_client, instance) == []


def instance_networks(client: docker.DockerClient, instance: str) -> list[str]:
    return [n.name for n in client.networks.list(filters={"label": f"{LABEL}.instance={instance}"})]


async def test_the_pool_grows_with_recent_demand_up_to_its_ceiling(sandbox_image):
    """Issue 16: cold rarer. Three runs in a minute: the pool keeps three boxes ready (its
    size is one, its ceiling three), so a fourth burst finds them made ahead."""
    runner = await SandboxRunner.start(SandboxConfig(
        instance=session_instance("-g"), image=sandbox_image, warm_pool=1, warm_pool_max=3))
    runner.pool.recent_s = 3600  # "recent" whatever the machine's load makes of the runs
    try:
        await runner.pool.wait_ready()
        assert runner.pool.ready("none") == 1
        for i in range(4):
            outcome = await runner.run(SandboxRequest(run_id="r", call_id=f"g{i}",
                                                      toolset="redis", action="nope"))
            assert outcome.pooled
            await runner.pool.wait_ready()
        [none] = [k for k in runner.pool.kinds() if k.name == "none"]
        assert runner.pool.target(none) == 3 and runner.pool.ready("none") == 3
    finally:
        await runner.close()


async def test_pooled_boxes_preload_only_the_configured_connectors(sandbox_image, docker_client,
                                                                   redis_server):
    """A deployment of Redis alone: its pooled boxes import Redis's connector ahead (and run
    its actions warm), not every connector in the image."""
    runner = await SandboxRunner.start(SandboxConfig(
        instance=session_instance("-p"), image=sandbox_image, warm_pool=1, warm_pool_max=1,
        preload=["redis"]))
    try:
        await runner.pool.wait_ready()
        pooled = docker_client.containers.list(
            filters={"label": f"{LABEL}.instance={runner.config.instance}"})
        assert {tuple(c.attrs["Args"]) for c in pooled} == {
            ("-m", "sandbox.entrypoint", "--preload", "redis")}
        outcome = await runner.run(redis_request(redis_server, "p-1"))
        assert outcome.pooled and outcome.result.status is Status.OK, outcome.result.error
    finally:
        await runner.close()


async def test_a_pool_that_ran_dry_refills_on_the_next_run(sandbox_image):
    """Fills that fail (a start slower than the ready timeout on a loaded host) are not retried
    on their own; the next run that finds the kind empty goes cold and starts a refill."""
    runner = await SandboxRunner.start(SandboxConfig(
        instance=session_instance("-d"), image=sandbox_image, warm_pool=1))
    try:
        await runner.pool.wait_ready()
        [box] = runner.pool._ready["none"]  # as if its fill had failed: the kind is empty
        runner.pool._ready["none"].clear()
        await runner.provisioner.destroy(box)

        outcome = await runner.run(SandboxRequest(run_id="r", call_id="d1", toolset="redis",
                                                  action="nope"))
        assert not outcome.pooled
        await runner.pool.wait_ready()
        assert runner.pool.ready("none") == 1
    finally:
        await runner.close()


async def test_engine_work_after_an_action_waits_and_settle_still_finishes_it(
        sandbox_image, redis_server, docker_client):
    """Issue 16: the removal of a used box and its pooled replacement's start wait
    ``housekeeping_delay_s`` (they competed for the CPU with the checkpoints and the answer
    that follow the result: a warm action's report came ~20 ms later); ``settle`` still waits
    for all of it. A runner without the delay runs the same action beside it: once its
    removal and refill are done, the delayed runner's have not happened."""
    delayed, prompt = session_instance("-h"), session_instance("-h0")
    runners = {name: await SandboxRunner.start(SandboxConfig(
        instance=name, image=sandbox_image, warm_pool=1, housekeeping_delay_s=delay))
        for name, delay in ((delayed, 5.0), (prompt, 0.0))}
    try:
        for runner in runners.values():
            await runner.pool.wait_ready()
        before = {name: instance_containers(docker_client, name) for name in runners}
        outcomes = {name: await runner.run(redis_request(redis_server, f"hk-{i}"))
                    for i, (name, runner) in enumerate(runners.items())}
        assert all(o.pooled and o.result.status is Status.OK for o in outcomes.values()), \
            [o.result.error for o in outcomes.values()]

        await runners[prompt].settle()  # the same work, undelayed, has been done
        await runners[prompt].pool.wait_ready()
        assert outcomes[prompt].container_id not in instance_containers(docker_client, prompt)
        assert runners[prompt].pool.ready("egress") == 1
        assert instance_containers(docker_client, delayed) == before[delayed]  # still there
        assert outcomes[delayed].container_id in before[delayed]
        assert runners[delayed].pool.ready("egress") == 0

        await runners[delayed].settle()
        await runners[delayed].pool.wait_ready()
        after = instance_containers(docker_client, delayed)
        assert outcomes[delayed].container_id not in after
        assert len(after) == len(before[delayed])
        assert runners[delayed].pool.ready("egress") == 1
    finally:
        for runner in runners.values():
            await runner.close()


def instance_containers(client: docker.DockerClient, instance: str) -> list[str]:
    return [c.id for c in client.containers.list(
        all=True, filters={"label": f"{LABEL}.instance={instance}"})]


async def test_warm_pool_container_has_the_same_hardening(sandbox_runner, cold_runner,
                                                          redis_server, docker_client):
    await sandbox_runner.pool.wait_ready()
    pooled_filter = {"label": [f"{LABEL}.instance={sandbox_runner.config.instance}",
                               f"{LABEL}.pool=egress"]}
    [pooled] = docker_client.containers.list(filters=pooled_filter)
    seen: dict = {}

    async def on_progress(text: str) -> None:
        seen.update(await asyncio.to_thread(snapshot, docker_client, "cold-1"))

    await cold_runner.run(redis_request(redis_server, "cold-1"), on_progress)
    cold = seen["container"]["HostConfig"]
    assert {k: pooled.attrs["HostConfig"][k] for k in HARDENING_KEYS} == {
        k: cold[k] for k in HARDENING_KEYS
    }
    assert pooled.attrs["Config"]["User"] == seen["container"]["Config"]["User"]
    network = docker_client.networks.get(pooled.attrs["HostConfig"]["NetworkMode"]).attrs
    assert network["Internal"]
    chain, bridge = sandbox_runner.firewall.chain, network["Options"][BRIDGE_OPTION]
    assert await asyncio.to_thread(bridge_rules, chain, bridge) == [  # idle: confined, no port
        f"-A {chain} -i {bridge} -j REJECT --reject-with icmp-port-unreachable",
        f"-A {chain} -i {bridge} -p tcp -j REJECT --reject-with tcp-reset"]
    while_running: list[str] = []

    async def on_warm_progress(text: str) -> None:
        while_running.extend(await asyncio.to_thread(bridge_rules, chain, bridge))

    outcome = await sandbox_runner.run(redis_request(redis_server, "warm-1"), on_warm_progress)
    assert outcome.pooled and outcome.result.status is Status.OK, outcome.result.error
    assert "redis_version:" in outcome.result.output
    assert len(while_running) == 4  # the two REJECTs plus its forwarder's ACCEPT and REJECT
    assert sum(rule.endswith("-j ACCEPT") for rule in while_running) == 1
    await sandbox_runner.settle()
    assert docker_client.containers.list(all=True, filters={"id": pooled.id}) == []
    assert await asyncio.to_thread(bridge_rules, chain, bridge) == []
    await sandbox_runner.pool.wait_ready()
    pool = sandbox_runner.pool  # refilled: as many as recent demand asks (other tests' runs too)
    [egress] = [kind for kind in pool.kinds() if kind.name == "egress"]
    assert pool.ready("egress") == pool.target(egress) >= 1


async def test_canary_secret_reaches_the_action_and_nowhere_else(
    cold_runner, docker_client, tmp_path
):
    canary = "canary-" + hashlib.sha256(str(time.time()).encode()).hexdigest()[:24]
    proc, server = start_redis(tmp_path, password=canary)
    try:
        request = redis_request(server, "secret-1", secrets={"redis_password": canary})
        request.config["password_secret"] = "kv/data/redis/test#password"
        seen: dict = {}

        async def on_progress(text: str) -> None:
            seen.update(await asyncio.to_thread(snapshot, docker_client, "secret-1"))
            container = docker_client.containers.get(seen["container"]["Id"])
            with pytest.raises(docker.errors.APIError):
                container.logs()  # log driver "none": Docker keeps no copy of any output

        with capture_logs() as logs:
            outcome = await cold_runner.run(request, on_progress)
    finally:
        proc.terminate()
        proc.wait(5)
    assert outcome.result.status is Status.OK, outcome.result.error  # AUTH used the canary
    inspected = json.dumps(seen)
    assert seen["container"]["Config"]["Env"] and canary not in inspected
    assert canary not in json.dumps(seen["container"]["Config"]["Labels"])
    assert canary not in " ".join(seen["container"]["Args"] + seen["container"]["Config"]["Cmd"])
    assert canary not in outcome.model_dump_json() and canary not in repr(logs)


ECHO_HASH = """
import hashlib, json, sys
request = json.loads(sys.stdin.read())
secret = request["secrets"]["token"]
print(json.dumps({"status": "ok", "invocation": "echo",
                  "output": hashlib.sha256(secret.encode()).hexdigest()}))
"""


async def test_action_sees_the_secret_it_was_given(cold_runner):
    canary = "canary-8f1d2c7e0b9a4f63"
    request = SandboxRequest(run_id="r", call_id="echo-1", toolset="test", action="echo",
                             secrets={"token": canary})
    outcome = await cold_runner.execute(request, ["python3", "-c", ECHO_HASH], None)
    assert outcome.result.output == hashlib.sha256(canary.encode()).hexdigest()


PROGRESSIVE = """
import json, sys, time
sys.stdin.read()
for step in ("connecting", "reading", "summarising"):
    sys.stderr.write(json.dumps({"progress": step}) + "\\n")
    sys.stderr.flush()
    time.sleep(0.6)
print(json.dumps({"status": "ok", "invocation": "slow", "output": "done"}))
"""


async def test_progress_arrives_while_the_action_runs(cold_runner):
    arrivals: list[tuple[str, float]] = []

    async def on_progress(text: str) -> None:
        arrivals.append((text, time.monotonic()))

    request = SandboxRequest(run_id="r", call_id="progress-1", toolset="test", action="slow")
    outcome = await cold_runner.execute(request, ["python3", "-c", PROGRESSIVE], on_progress)
    finished = time.monotonic()
    assert outcome.result.output == "done"
    assert [text for text, _ in arrivals] == ["connecting", "reading", "summarising"]
    assert finished - arrivals[0][1] > 1.0  # the first line came well before the end
    assert arrivals[1][1] - arrivals[0][1] > 0.4  # one by one, not in a batch at the end


async def test_missing_image_is_one_sentence_not_an_exception():
    runner = await SandboxRunner.start(
        SandboxConfig(instance=session_instance("-m"), image="opsbot-sandbox:000000000000",
                      warm_pool=1)
    )
    try:
        outcome = await runner.run(SandboxRequest(run_id="r", call_id="c", toolset="redis",
                                                  action="info"))
    finally:
        await runner.close()
    assert outcome.result.status is Status.ERROR
    assert outcome.result.error == (
        "The sandbox image opsbot-sandbox:000000000000 was not found: run `opsbot sandbox build`."
    )
    assert runner.image_problem == outcome.result.error


SHOW_FORWARDER = """
import json, socket, sys, time
request = json.loads(sys.stdin.read())
address = next(iter(request["endpoints"].values()))
sys.stderr.write(json.dumps({"progress": address}) + "\\n")
sys.stderr.flush()
time.sleep(1)
host, _, port = address.rpartition(":")
socket.create_connection((host, int(port)), timeout=5).close()
print(json.dumps({"status": "ok", "invocation": "probe", "output": "forwarder reachable"}))
"""


async def test_a_forwarder_serves_only_its_own_container(cold_runner, redis_server):
    attempts: list[str] = []

    async def from_the_host(address: str) -> None:
        host, _, port = address.rpartition(":")
        try:
            await asyncio.open_connection(host, int(port))
            attempts.append("connected")
        except ConnectionRefusedError:
            attempts.append("refused")

    request = SandboxRequest(run_id="r", call_id="forwarder-1", toolset="test", action="probe",
                             egress=[Endpoint(host=redis_server.host, port=redis_server.port)])
    outcome = await cold_runner.execute(request, ["python3", "-c", SHOW_FORWARDER],
                                        from_the_host)
    assert outcome.result.output == "forwarder reachable", outcome.result.error
    assert attempts == ["refused"]


SLEEPER = ("import json, sys, time; sys.stdin.read(); time.sleep(1.5); "
           "print(json.dumps({'status': 'ok', 'invocation': 'sleep', 'output': 'slept'}))")


async def test_the_process_runs_at_most_max_running_actions_and_says_who_waits(sandbox_image):
    """Four actions at once with ``max_running=2``: two start, two are told they wait and run
    after; with a short ``slot_wait_s`` a waiting action fails with a sentence instead."""
    config = SandboxConfig(instance=session_instance("-s"), image=sandbox_image, warm_pool=0,
                           max_running=2)
    runner = await SandboxRunner.start(config)
    said: list[str] = []

    async def progress(line: str) -> None:
        said.append(line)

    def request(n: int) -> SandboxRequest:
        return SandboxRequest(run_id="slots", call_id=f"slot-{n}", toolset="t", action="sleep")

    try:
        outcomes = await asyncio.gather(*(runner.execute(request(n), ["python3", "-c", SLEEPER],
                                                         progress) for n in range(4)))
        assert [o.result.output for o in outcomes] == ["slept"] * 4
        assert said == ["waiting for a free sandbox: 2 actions are running on this opsbot "
                        "(its limit)"] * 2
    finally:
        await runner.close()

    impatient = await SandboxRunner.start(config.model_copy(update={"max_running": 1,
                                                                     "slot_wait_s": 0.3}))
    try:
        both = await asyncio.gather(
            *(impatient.execute(request(n), ["python3", "-c", SLEEPER], None) for n in (5, 6)))
        assert sorted(o.result.output or o.result.error for o in both) == [
            "Not run: opsbot was already running as many sandboxed actions as it may at once "
            "(1), and none finished within 0.3 s. Try again when the others are done.", "slept"]
    finally:
        await impatient.close()
