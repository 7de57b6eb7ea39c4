"""One MCP tool call through opsbot against the same call made directly, same run.

Run as root on a machine with Docker (the sandbox image is built if missing)::

    .venv/bin/python bench/mcp_bench.py [--samples 15]

The tool is ``get_current_time`` of the reference server ``mcp-server-time`` (read-only, tier
0: no approval, so the numbers are opsbot's own overhead, not a human's).

Rows, interleaved sample by sample so machine noise hits them alike:
  * direct (session): the ``mcp`` client with one warm stdio session to the server on the host,
    one ``call_tool`` per sample: the floor, what an agent that trusts the server pays;
  * direct (spawn): the ``mcp`` client starting the server, calling once and closing it per
    sample: what a call costs when nothing of the server outlives it (as in opsbot);
  * opsbot: an MCP client calling ``time__get_current_time`` on opsbot's ``/mcp`` with a bearer
    token: a run for the token's user (policy, checkpointed graph, audit, Slack status via the
    emulator) whose action runs in a *warm* sandbox container of the server's own pool kind,
    where the server was started and its session opened before the call (the pool is
    refilled between samples: a chat bot's pace; the unrecorded first round adds the kind).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx2  # noqa: E402
import structlog  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from bot.server import running_bot  # noqa: E402
from bot.tokens import issue  # noqa: E402
from sandbox.image import build_image  # noqa: E402
from tests.fakes.slack import SlackEmulator  # noqa: E402
from tests.scenarios.harness import CHANNEL, settings_for  # noqa: E402

SERVER = """\
version: 1
servers:
  - name: time
    transport: stdio
    command: python3
    args: [-m, mcp_server_time, --local-timezone, UTC]
"""
ARGS = {"timezone": "UTC"}
DIRECT = StdioServerParameters(command=sys.executable,
                               args=["-m", "mcp_server_time", "--local-timezone", "UTC"])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed(work: Callable[[], Awaitable[object]]) -> float:
    began = time.perf_counter()
    result = await work()
    if getattr(result, "is_error", False):
        raise RuntimeError(f"the call failed: {result}")
    return time.perf_counter() - began


async def spawn_once() -> object:
    async with Client(DIRECT, cache=None) as direct:
        return await direct.call_tool("get_current_time", ARGS)


async def main(samples: int) -> None:
    build_image(log=lambda line: None)
    print(f"load average at start {Path('/proc/loadavg').read_text().split()[:3]}")
    rows: dict[str, list[float]] = {"direct (session)": [], "direct (spawn)": [], "opsbot": []}
    with tempfile.TemporaryDirectory() as tmp, SlackEmulator() as slack:
        servers = Path(tmp) / "mcp.yml"
        servers.write_text(SERVER)
        slack.add_channel(CHANNEL, "ops")
        slack.set_usergroup("S0SRE", [])  # the harness policy's approver group
        settings = settings_for(slack, None, Path(tmp) / "data", mcp=servers,
                                mcp_channel=CHANNEL)  # no REDIS_URL: the time server only
        async with running_bot(settings, host="127.0.0.1", status_interval=0.05) as bot:
            _, secret = await issue(bot.runtime.tokens, "UBENCH")
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {secret}"},
                                      timeout=httpx2.Timeout(30, read=120))
            async with (Client(DIRECT, cache=None) as direct,
                        Client(streamable_http_client(f"{bot.url}/mcp", http_client=http),
                               cache=None) as opsbot):
                for i in range(samples + 1):  # the first round warms everything up, unrecorded
                    await bot.runtime.sandbox.pool.wait_ready()
                    await bot.runtime.sandbox.settle()
                    took = {
                        "direct (session)": await timed(
                            lambda: direct.call_tool("get_current_time", ARGS)),
                        "direct (spawn)": await timed(spawn_once),
                        "opsbot": await timed(
                            lambda: opsbot.call_tool("time__get_current_time", ARGS)),
                    }
                    if i:
                        for name, seconds in took.items():
                            rows[name].append(seconds)
            sandboxed = sandbox_seconds(bot.runtime.audit)[1:]
    report(rows, samples)
    print(f"of which in the sandbox (pooled container with the server started, call), median: "
          f"{statistics.median(sandboxed) * 1000:.0f} ms")


def sandbox_seconds(audit) -> list[float]:
    rows = audit.db.execute("select data from audit where kind = 'sandbox.exec' order by id")
    return [json.loads(r[0])["duration_s"] for r in rows.fetchall()]


def report(rows: dict[str, list[float]], samples: int) -> None:
    base = statistics.median(rows["direct (session)"])
    spawn = statistics.median(rows["direct (spawn)"])
    print(f"MCP tool call, {samples} samples each, load average at the end "
          f"{Path('/proc/loadavg').read_text().split()[:3]}")
    print(f"{'row':<18}{'p50 ms':>10}{'p90 ms':>10}{'max ms':>10}  vs session  vs spawn")
    for name, values in rows.items():
        p50 = statistics.median(values)
        print(f"{name:<18}{p50 * 1000:>10.1f}{percentile(values, 0.9) * 1000:>10.1f}"
              f"{max(values) * 1000:>10.1f}  {p50 / base:>9.1f}x  {p50 / spawn:>7.2f}x")
    overhead = statistics.median(rows["opsbot"]) - base
    print(f"opsbot's overhead over a warm direct session, median: {overhead * 1000:.0f} ms "
          "(token, policy, run, checkpoints, audit, Slack status, sandbox container)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=15)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("OPSBOT_LOG_LEVEL", "warning")
    asyncio.run(main(parser.parse_args().samples))
