"""``OPSBOT_ACCEPTOR_PORT``: Slack's requests answered by a process that does nothing else
(``bot/acceptor.py``), run by the bot process (``bot/forwarding.py``) once, as if it had acked
them itself. Real processes, sockets and HTTP throughout."""

import os
import signal

import aiohttp
import pytest
from prometheus_client import REGISTRY

from bot.settings import Settings
from tests.fakes.otlp import OtlpReceiver
from tests.fakes.payloads import Signature, SlackClient, slash_command, url_verification
from tests.fakes.server import wait_until
from tests.fakes.slack import SlackEmulator
from tests.scenarios.harness import CHANNEL, REQUESTER, harness, settings_for
from tests.scenarios.process import bot_env, bot_processes  # noqa: F401 (fixture)
from tests.services import free_port

pytestmark = pytest.mark.docker


SERVER = 2  # OTLP span kind


@pytest.fixture
def otlp():
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
async def h(slack_emulator: SlackEmulator, redis_server, sandbox_image, tmp_path, storage, otlp):
    settings = settings_for(slack_emulator, redis_server.url, tmp_path / "data",
                            acceptor_port=free_port(), otel_endpoint=otlp.origin, **storage)
    async with harness(settings, slack_emulator) as running:
        await wait_until(lambda: running.bot.acceptor.listening, 20,
                         lambda: "the acceptor to listen")
        running.client.url = f"http://127.0.0.1:{running.bot.acceptor.listening}/slack/events"
        yield running


@pytest.mark.parametrize("storage", ["sqlite", "postgres"], indirect=True)
async def test_a_command_through_the_acceptor_runs_once_and_reports(h, redis_db):
    delivery = await h.command("redis info section=server")
    assert (delivery.status, delivery.body) == (200, "")
    report = await h.report(await h.run_thread())
    assert "redis_version:" in report.text and "done" in report.text
    await handed_over(h)  # a second hand-off of the request would have been recorded by now
    assert len(await h.bot.runtime.audit.rows(("task",))) == 1, "recorded once"
    assert len(h.top_level()) == 1, "the bot process ran the handed-over request once"


async def test_the_ack_is_measured_and_traced_as_the_acceptor_saw_it(h, otlp, redis_db):
    acks = _sample("opsbot_slack_ack_seconds_count")
    took = _sample("opsbot_slack_ack_seconds_sum")
    assert (await h.command("redis info section=server")).status == 200
    await h.report(await h.run_thread())
    (submit,) = await otlp.wait_for(lambda: otlp.spans(name="run.submit"), 15)
    root = next(s for s in otlp.spans(trace_id=submit.trace_id) if not s.parent_id)
    assert (root.name, root.kind) == ("POST /slack/events", SERVER)
    assert root.attributes["opsbot.acceptor"] is True and submit.parent_id == root.span_id
    assert root.start_ns < root.end_ns <= submit.start_ns, "answered, then handed over"
    assert _sample("opsbot_slack_ack_seconds_count") == acks + 1
    answered_in = _sample("opsbot_slack_ack_seconds_sum") - took
    assert answered_in == pytest.approx((root.end_ns - root.start_ns) / 1e9, abs=1e-6)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def handed_over(h) -> None:
    """Until the bot process has run everything the acceptor handed it before now: a signed
    ``/ops help`` sent last comes back through its response_url only after the requests ahead
    of it on the socket were dispatched, and their hand-offs are then drained."""
    url = h.slack.response_url(CHANNEL, REQUESTER)
    await h.post(slash_command("help", user=REQUESTER, channel=CHANNEL, response_url=url))
    await wait_until(lambda: h.slack.responses(url), 10, lambda: "the barrier's help")
    await h.bot.deps.drain()


async def test_what_the_ack_would_say_goes_through_the_response_url(h):
    url = h.slack.response_url(CHANNEL, REQUESTER)
    delivery = await h.post(slash_command("help", user=REQUESTER, channel=CHANNEL,
                                          response_url=url))
    assert (delivery.status, delivery.body) == (200, "")
    (helped,) = await wait_until(lambda: h.slack.responses(url), 10,
                                 lambda: "help at the response_url")
    assert "`redis info" in helped.body["text"]
    assert helped.body["response_type"] == "ephemeral"
    url = h.slack.response_url(CHANNEL, REQUESTER)
    await h.post(slash_command("rdis info", user=REQUESTER, channel=CHANNEL, response_url=url))
    (unknown,) = await wait_until(lambda: h.slack.responses(url), 10, lambda: "the parse error")
    assert "Did you mean `redis`?" in unknown.body["text"]


@pytest.mark.parametrize("signature", [Signature.FORGED, Signature.STALE, Signature.MISSING])
async def test_bad_signatures_get_401_and_reach_nothing(h, signature):
    refused = _sample("opsbot_slack_requests_total", outcome="bad_signature")
    delivery = await h.post(slash_command("redis info", slack=h.slack), signature=signature)
    assert delivery.status == 401
    await handed_over(h)
    assert _sample("opsbot_slack_requests_total", outcome="bad_signature") == refused + 1
    assert h.top_level() == [] and await h.bot.runtime.audit.rows(("task",)) == []
    assert len(h.slack.responses()) == 1, "only the barrier's help answered"


async def test_slacks_own_checks_are_answered_by_the_acceptor(h):
    delivery = await h.post(url_verification("chal-9"))
    assert delivery.status == 200 and delivery.json() == {"challenge": "chal-9"}
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{h.bot.acceptor.listening}/healthz") as response:
        assert response.status == 200 and (await response.json()) == {"ok": True}


async def test_a_killed_acceptor_is_started_again_on_its_port(h, redis_db):
    port, acceptor = h.bot.acceptor.listening, h.bot.acceptor
    os.kill(acceptor._proc.pid, signal.SIGKILL)
    await wait_until(lambda: acceptor.starts == 2 and acceptor.listening, 20,
                     lambda: "the acceptor to be started again")
    assert acceptor.listening == port
    assert (await h.command("redis info")).status == 200
    assert "done" in (await h.report(await h.run_thread())).text


async def test_readyz_and_metrics_show_the_acceptor(h):
    await h.command("help")
    await wait_until(h.slack.responses, 10, lambda: "the help through the response_url")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{h.bot.url}/readyz") as response:
            assert response.status == 200
            assert (await response.json())["checks"]["acceptor"] == "ok"
        async with session.get(f"{h.bot.url}/metrics") as response:
            assert 'opsbot_slack_requests_total{outcome="acceptor"}' in await response.text()


def test_the_port_cannot_be_socket_modes_or_the_bots_own(tmp_path):
    from bot.errors import ConfigError

    common = dict(slack_bot_token="xoxb-1", data_dir=tmp_path, _env_file=None)
    with pytest.raises(ConfigError, match="OPSBOT_ACCEPTOR_PORT is set but Slack is in Socket"):
        Settings(**common, slack_app_token="xapp-1", acceptor_port=3001).check_slack()
    with pytest.raises(ConfigError, match="OPSBOT_ACCEPTOR_PORT is OPSBOT_PORT"):
        Settings(**common, slack_signing_secret="s", port=3001,
                 acceptor_port=3001).check_slack()


async def test_the_acceptor_leaves_with_a_killed_bot_process(slack_emulator, redis_server,
                                                            sandbox_image, tmp_path,
                                                            bot_processes):
    port = free_port()
    env = bot_env(slack_emulator, tmp_path / "data", redis_server.url, sandbox_image,
                  OPSBOT_ACCEPTOR_PORT=str(port))
    bot = await bot_processes.start(env)
    listening = await wait_until(lambda: bot.acceptor, 20, lambda: "the acceptor to listen")
    assert listening["port"] == port
    async with SlackClient(f"http://127.0.0.1:{port}/slack/events") as client:
        assert (await client.post(slash_command("help", slack=slack_emulator))).status == 200
    await bot.kill()
    await wait_until(lambda: not _listening(port), 10, lambda: "the acceptor to exit with the bot")


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
