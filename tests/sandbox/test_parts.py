"""The sandbox's parts without a container: stream decoding over a real socket pair, the
egress forwarder against a real Redis (by address and by name, as root and as nobody), the
entrypoint in-process and as a process, config, connecting to an engine that does not answer."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time

import pytest
import redis
from pydantic import ValidationError

from sandbox import messages
from sandbox.config import SandboxConfig, new_instance
from sandbox.egress import endpoints_map, keeps_name, named_hosts, open_forwarders
from sandbox.engine import Engine, EngineError
from sandbox.entrypoint import handle
from sandbox.image import ROOT
from sandbox.protocol import SandboxRequest
from sandbox.stream import Channel, FrameParser, LineSplitter
from tools.base import Endpoint, Status


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def test_frames_survive_arbitrary_chunking():
    wire = frame(2, b'{"progress": "a"}\n') + frame(1, b'{"status"') + frame(1, b': "ok"}\n')
    parser = FrameParser()
    frames = [f for i in range(0, len(wire), 5) for f in parser.feed(wire[i:i + 5])]
    assert frames == [(2, b'{"progress": "a"}\n'), (1, b'{"status"'), (1, b': "ok"}\n')]


def test_line_splitter_keeps_partials_and_cuts_floods():
    lines = LineSplitter()
    assert lines.feed(b"one\ntw") == [b"one"]
    assert lines.feed(b"o\n") == [b"two"]
    assert lines.feed(b"x" * 100_000) == []
    assert len(lines.feed(b"\n")[0]) == 4000


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    yield Channel(ours), theirs
    ours.close()
    theirs.close()


async def test_channel_reads_ready_progress_and_stops_at_the_result(pair):
    channel, container = pair
    container.sendall(frame(2, b'{"ready": true}\n'))
    assert await channel.ready()
    progress: list[str] = []
    container.sendall(frame(2, b'{"progress": "step 1"}\nplain diagnostic\n')
                      + frame(1, b'{"status": "ok", "invocation": "x", "output": "y"}\n')
                      + frame(1, b"ignored after the result"))
    seen = await channel.exchange(b"request\n", 1000, progress.append)
    assert container.recv(100) == b"request\n"
    assert container.recv(100) == b""  # half-closed: the container's stdin sees EOF
    assert progress == ["step 1"]
    assert seen.diagnostics == ["plain diagnostic"]
    assert json.loads(seen.result_line) == {"status": "ok", "invocation": "x", "output": "y"}
    assert not seen.eof and not seen.truncated


async def test_channel_cuts_a_flood_and_reports_a_silent_exit(pair):
    channel, container = pair
    container.sendall(frame(1, b"x" * 3000))
    flood = await channel.exchange(b"{}", 1000, lambda text: None)
    assert flood.truncated and len(flood.stdout) == 1000 and flood.result_line is None
    ours, theirs = socket.socketpair()
    theirs.close()
    silent = await Channel(ours).exchange(b"{}", 1000, lambda text: None)
    ours.close()
    assert silent.eof and silent.result_line is None


async def test_an_engine_that_does_not_answer_is_an_error_and_never_blocks_the_loop():
    """docker-py asks for the engine's API version while building its client: an engine that
    holds the connection for half a second must not stall the event loop meanwhile."""
    silent = socket.create_server(("127.0.0.1", 0))

    def hold_then_hang_up() -> None:
        connection, _ = silent.accept()
        time.sleep(0.5)
        connection.close()

    threading.Thread(target=hold_then_hang_up, daemon=True).start()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    url = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
    try:
        with pytest.raises(EngineError, match=f"reach the Docker engine at {url}"):
            await Engine.connect(url)
    finally:
        ticker.cancel()
        silent.close()
    assert ticks >= 5  # ~50 in 0.5 s (fewer on a loaded machine); a blocked loop: none


async def test_forwarder_relays_to_exactly_its_endpoint(redis_server, redis_db):
    redis_db.set("k", "v")
    endpoint = Endpoint(host=redis_server.host, port=redis_server.port)
    forwarders = await open_forwarders("127.0.0.1", [endpoint, endpoint])
    assert len(forwarders) == 1  # one listener per distinct endpoint
    mapped = endpoints_map(forwarders)[str(endpoint)]
    host, _, port = mapped.rpartition(":")
    client = redis.Redis(host=host, port=int(port), socket_timeout=5)
    assert await asyncio.to_thread(client.get, "k") == b"v"
    client.close()
    await forwarders[0].close()
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2)


async def test_forwarder_to_a_dead_endpoint_closes_the_connection():
    [forwarder] = await open_forwarders("127.0.0.1", [Endpoint(host="127.0.0.1", port=1)])
    reader, writer = await asyncio.open_connection("127.0.0.1", forwarder.port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await forwarder.close()


@pytest.mark.parametrize("host,kept", [
    ("api.github.com", True), ("redis", True), ("API.Example.test.", True),
    ("127.0.0.1", False), ("::1", False), ("[::1]", False), ("localhost", False),
    ("db.localhost", False),
])
def test_dns_names_keep_their_name_and_addresses_do_not(host, kept):
    assert keeps_name(host) is kept
    assert named_hosts([Endpoint(host=host, port=1)]) == ([host] if kept else [])


async def test_named_forwarder_listens_on_the_declared_port_and_relays_to_the_override(
    redis_server, redis_db
):
    """127.0.0.2 plays the gateway (all of 127/8 is loopback): redis holds 127.0.0.1:<port>,
    the forwarder takes 127.0.0.2:<port>; a second name on that port gets a free one."""
    redis_db.set("k", "by name")
    port = redis_server.port
    first, second = Endpoint(host="a.example.test", port=port), Endpoint(host="b.example.test",
                                                                         port=port)
    overrides = {"a.example.test": "127.0.0.1", "b.example.test": "127.0.0.1"}
    forwarders = await open_forwarders("127.0.0.2", [first, second], overrides)
    mapped = endpoints_map(forwarders)
    assert forwarders[0].address == f"127.0.0.2:{port}"
    assert mapped[str(first)] == f"a.example.test:{port}"
    assert mapped[str(second)] == f"b.example.test:{forwarders[1].port}" != mapped[str(first)]
    for forwarder in forwarders:
        client = redis.Redis(host="127.0.0.2", port=forwarder.port, socket_timeout=5)
        assert await asyncio.to_thread(client.get, "k") == b"by name"
        client.close()
    for forwarder in forwarders:
        await forwarder.close()


UNPRIVILEGED = """
import asyncio, json
from sandbox.egress import endpoints_map, open_forwarders
from tools.base import Endpoint
async def main():
    forwarders = await open_forwarders("127.0.0.1", [Endpoint(host="api.github.com", port=443)])
    print(json.dumps(endpoints_map(forwarders)))
asyncio.run(main())
"""


def test_without_privilege_a_named_endpoint_keeps_its_name_on_a_free_port():
    """Ports below 1024 need CAP_NET_BIND_SERVICE (root has it): a process without it, like a
    non-root opsbot, gets a free port for the forwarder, and only the port changes."""
    drop = ["setpriv", "--bounding-set", "-net_bind_service"]
    done = subprocess.run([*drop, sys.executable, "-c", UNPRIVILEGED], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    [line] = [text for text in done.stdout.splitlines() if text.startswith("{")]
    host, _, port = json.loads(line)["api.github.com:443"].rpartition(":")
    assert host == "api.github.com" and int(port) >= 1024
    assert "sandbox.egress.port_fallback" in done.stdout and "EACCES" in done.stdout


def request(**fields) -> bytes:
    body = {"run_id": "r", "call_id": "c", "toolset": "redis", "action": "get"} | fields
    return json.dumps(body).encode()


@pytest.mark.parametrize("raw,error", [
    (b"not json", "The sandbox got a malformed request"),
    (request(action="nope"), "This sandbox image has no action `redis nope`; rebuild it"),
    (request(params={"key": ""}), "Bad parameters: key: String should have at least 1 char"),
    (request(params={"key": "k"}, config={"url": "http://x"}),
     "The action crashed: ValidationError"),
])
def test_entrypoint_turns_every_failure_into_a_result(raw, error):
    result = handle(raw, lambda text: None)
    assert result.status is Status.ERROR and result.error.startswith(error), result.error


def test_entrypoint_scrubs_secret_values_from_the_result(redis_server, redis_db):
    redis_db.set("leak", "the password is hunter2-secret")
    progress: list[str] = []
    raw = request(params={"key": "leak"}, config={"url": redis_server.url},
                  secrets={"other": "hunter2-secret"})
    result = handle(raw, progress.append)
    assert result.status is Status.OK
    assert result.output == "the password is [redacted]"
    assert progress == ["Running `redis get` in the sandbox"]


def test_entrypoint_process_writes_one_result_line(redis_server, redis_db):
    redis_db.set("k", "v")
    raw = request(params={"key": "k"}, config={"url": redis_server.url})
    done = subprocess.run([sys.executable, "-m", "sandbox.entrypoint"], input=raw, cwd=ROOT,
                          capture_output=True, timeout=60, check=True)
    [line] = done.stdout.splitlines()
    assert json.loads(line)["output"] == "v"
    stderr = [json.loads(text) for text in done.stderr.splitlines()]
    assert stderr == [{"ready": True}, {"progress": "Running `redis get` in the sandbox"}]


CONNECTORS_LOADED = ("import sys; from sandbox.entrypoint import handle, {setup}; "
                     "handle(sys.stdin.buffer.read(), lambda text: None); "
                     "import tools; print(sorted(m for m in sys.modules if m in "
                     "{{module for module, _ in tools.REGISTRY.values()}}))")


def connectors_loaded(raw: bytes, setup: str = "main as _") -> list[str]:
    """The connector modules a fresh interpreter imported to answer ``raw``."""
    done = subprocess.run([sys.executable, "-c", CONNECTORS_LOADED.format(setup=setup)],
                          input=raw, cwd=ROOT, capture_output=True, timeout=60, check=True)
    return json.loads(done.stdout.decode().replace("'", '"'))


def test_a_cold_entrypoint_imports_only_the_connector_its_request_names():
    """A cold container starts Python with the request already waiting: every other
    connector's imports (boto3, jsonschema, requests: ~430 ms in the image) would be paid for
    nothing."""
    assert connectors_loaded(request(params={"key": "k"}, config={"url": "redis://h:1/0"})) == [
        "tools.redis"]


def test_a_pooled_entrypoint_imports_every_connector_ahead():
    import tools

    loaded = connectors_loaded(b"not json", setup="_preload; _preload()")
    assert loaded == sorted({module for module, _ in tools.REGISTRY.values()})


WATCHED = ("tools.redis", "redis", "tools.github", "github", "tools.postgres", "psycopg",
           "tools.shell_ssh", "asyncssh", "mcp", "tools.aws")
PRELOADED = ("import json, sys; sys.argv = ['entrypoint', *{argv!r}]; "
             "from sandbox import entrypoint; entrypoint.main(); "
             "print(json.dumps([m for m in {watched!r} if m in sys.modules]), file=sys.stderr)")


def preloaded(*argv: str) -> list[str]:
    """Of WATCHED, what a pooled entrypoint started with ``argv`` imported before its request
    (a malformed one, answered with an error result)."""
    done = subprocess.run([sys.executable, "-c", PRELOADED.format(argv=argv, watched=WATCHED)],
                          input=b"not json", cwd=ROOT, capture_output=True, timeout=60,
                          check=True)
    return json.loads(done.stderr.decode().splitlines()[-1])


def test_a_pooled_entrypoint_imports_only_the_configured_connectors_and_their_libraries():
    """A deployment with Redis alone gets boxes that imported Redis's connector and client,
    not GitHub's, SSH's or MCP's (~0.6 s of CPU per box that nothing would use)."""
    assert preloaded("--preload", "redis") == ["tools.redis", "redis"]
    assert preloaded("--preload", "postgres,shell") == [
        "tools.postgres", "psycopg", "tools.shell_ssh", "asyncssh"]
    assert preloaded("--preload", "redis,no-such-toolset") == ["tools.redis", "redis"]
    assert "mcp" in preloaded("--preload", "mcp")


def test_a_pooled_entrypoint_without_a_list_imports_every_connector():
    """``--preload`` alone (and before another flag, as the AWS kind's ``--warm``): all."""
    from sandbox.entrypoint import _listed

    assert sorted(preloaded("--preload")) == sorted(WATCHED)
    assert _listed(["--preload", "--warm", "tools.aws_ops:warm"], "--preload") is None
    assert _listed(["--preload", "redis,,shell"], "--preload") == ["redis", "shell"]


def test_wire_is_the_only_place_secrets_are_revealed():
    req = SandboxRequest(run_id="r", call_id="c", toolset="t", action="a",
                         secrets={"token": "s3cr3t-value"})
    assert "s3cr3t-value" not in repr(req) + req.model_dump_json()
    assert json.loads(req.wire())["secrets"] == {"token": "s3cr3t-value"}


def test_config_limits_and_instance_keys(tmp_path):
    config = SandboxConfig()
    assert config.timeout_for(20) == 20 and config.timeout_for(0) == 30
    assert SandboxConfig(max_timeout_s=60).timeout_for(600) == 60
    one, two, other = new_instance(tmp_path), new_instance(tmp_path / "."), new_instance(tmp_path / "x")
    assert one[:7] == two[:7] != other[:7] and one != two, "grouped by data dir, never shared"
    assert SandboxConfig(instance=one).instance == one
    with pytest.raises(ValidationError, match="instance"):
        SandboxConfig(instance="Bad_Name")
    with pytest.raises(ValidationError, match="user"):
        SandboxConfig(user="0:0")
    with pytest.raises(ValidationError, match="at least a /24"):
        SandboxConfig(egress_subnets="10.0.0.0/28")
    with pytest.raises(ValidationError, match="keys must be DNS names, got 'bad name'"):
        SandboxConfig(egress_hosts={"bad name": "127.0.0.1"})
    assert SandboxConfig(egress_hosts={"api.example.test": "::1"}).upstreams == {
        "api.example.test": "::1"}


@pytest.mark.parametrize("n,text", [(1_000_000, "1 MB"), (1 << 20, "1 MiB"), (1500, "1500 bytes"),
                                    (64_000, "64 kB")])
def test_sizes_read_naturally(n, text):
    assert messages.size(n) == text
