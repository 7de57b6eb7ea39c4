"""Acceptance latency of the Alertmanager and GitHub webhooks against the Slack ack, in one run.

    .venv/bin/python bench/webhook_bench.py [--requests 200] [--levels 1,8] [--rounds 2]

Processes: this one generates load (aiohttp, keep-alive, closed loop: each of N clients sends
its next request when the previous answer arrived); the Slack Web API emulator; a
redis-server; and ``python -m bot.cli serve`` in HTTP mode as deployed (SQLite data dir,
sandbox runner), with ``OPSBOT_ALERTMANAGER_TOKEN``, ``GITHUB_WEBHOOK_SECRET`` and a policy
whose ``alert_routes`` and ``github_repos`` send everything to the ops channel. No LLM is
configured, so a run started by a webhook answers with runbooks and typed commands.

The baseline is opsbot's own Slack ack in the same process and run: a signed ``/ops help``
(the answer rides on the ack; see ``ack_bench.py``, whose helpers this reuses). Rows:
  * Alertmanager, a new group each time: credentials checked, v4 body parsed, 202; then the
    group is claimed in the records and a run submitted and driven — in the same process;
  * Alertmanager, a repeat of a group that fires: 202, then the repeat is audited and shown on
    the group's run;
  * GitHub ``pull_request`` opened, a new delivery each time: HMAC of the whole body, parse,
    dedupe row, policy route, 202; then a review run;
  * GitHub redelivery of one delivery id: HMAC, parse, the dedupe row already there, 200.
Every request is built and signed before its timer starts; latency = send → whole answer read.
Rows alternate round by round, each once opsbot is idle (no queued or running run).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import aiohttp

from ack_bench import drained, helper, load, percentile
from sandbox.image import build_image
from tests.fakes.payloads import SIGNING_SECRET
from tests.fakes.slack import BOT_TOKEN
from tests.scenarios.harness import CHANNEL, POLICY
from tests.scenarios.process import BotProcess, opsbot_env
from tests.services.redis import start_redis

FIXTURES = ROOT / "tests" / "fixtures" / "webhooks"
TOKEN, SECRET = "bench-alertmanager-token", "bench-github-secret"
ROUTES = f"""\
alert_routes:
  - channel: {CHANNEL}
github_repos:
  - repo: acme/*
    channel: {CHANNEL}
"""
Request = tuple[str, bytes, dict[str, str]]  # path, body, headers
Results = dict[tuple[int, int], list[float]]


def alertmanager(group: str) -> Request:
    body = json.loads((FIXTURES / "alertmanager_payments_firing.json").read_text())
    body["groupKey"] = f'{{}}/{{team="payments"}}:{{alertname="HighErrorRate", n="{group}"}}'
    return ("/webhooks/alertmanager", json.dumps(body).encode(),
            {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})


def github(delivery: str) -> Request:
    body = (FIXTURES / "github_pull_request_opened.json").read_bytes()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return ("/webhooks/github", body, {
        "Content-Type": "application/json", "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": signature})


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> str:
        self.n += 1
        return f"{os.getpid()}-{self.n}"


FRESH = Counter()
ROWS: tuple[tuple[str, Callable[[], Request] | None], ...] = (
    ("Slack ack: opsbot /ops help (baseline)", None),
    ("Alertmanager, a new group (then a run)", lambda: alertmanager(FRESH.next())),
    ("Alertmanager, repeat of a firing group", lambda: alertmanager("repeated")),
    ("GitHub pull_request, new delivery (then a run)", lambda: github(FRESH.next())),
    ("GitHub redelivery (duplicate)", lambda: github("redelivered")),
)


async def post_load(base: str, make: Callable[[], Request], total: int, clients: int
                    ) -> list[float]:
    latencies: list[float] = []
    todo = iter(range(total))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def client() -> None:
            for _ in todo:
                path, body, headers = make()
                began = time.perf_counter()
                async with session.post(base + path, data=body, headers=headers) as response:
                    await response.read()
                    if response.status not in (200, 202):
                        raise SystemExit(f"{path} answered {response.status}")
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


async def row(bot: BotProcess, origin: str, index: int, total: int, clients: int) -> list[float]:
    make = ROWS[index][1]
    if make is None:
        return await load(bot.events_url, "help", origin, total, clients)
    return await post_load(bot.url, make, total, clients)


async def measure(env: dict[str, str], origin: str, levels: list[int], total: int,
                  rounds: int) -> Results:
    bot = BotProcess(env)
    await bot.start()
    try:
        for index in range(len(ROWS)):  # warm-up; also makes the repeated group and delivery
            await row(bot, origin, index, 5, 1)
        results: Results = {}
        for clients in levels:
            for _ in range(rounds):
                for index in range(len(ROWS)):
                    await drained(bot.data_dir, bot.instance)
                    latencies = await row(bot, origin, index, total // rounds, clients)
                    results.setdefault((clients, index), []).extend(latencies)
        await drained(bot.data_dir, bot.instance)
        return results
    finally:
        await bot.terminate()


def report(results: Results, levels: list[int], load: tuple[float, float]) -> None:
    print(f"\nwebhook acceptance latency; × = row / opsbot's Slack ack (/ops help) at the same "
          f"load and percentile; load average {load[0]:.1f} before, {load[1]:.1f} after, "
          f"{os.cpu_count()} CPUs\n")
    print(f"{'clients':>7}  {'':48} {'n':>5} {'p50 ms':>7} {'p99 ms':>7} {'×p50':>6} {'×p99':>6}")
    for clients in levels:
        base = results[(clients, 0)]
        for index, (name, _) in enumerate(ROWS):
            values = results[(clients, index)]
            p50, p99 = statistics.median(values), percentile(values, 0.99)
            print(f"{clients:>7}  {name:48} {len(values):>5} {p50 * 1000:7.1f} "
                  f"{p99 * 1000:7.1f} {p50 / statistics.median(base):6.2f} "
                  f"{p99 / percentile(base, 0.99):6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="per row and level")
    parser.add_argument("--levels", default="1,8")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]
    image = build_image(log=lambda line: print(line, file=sys.stderr))
    before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, helper("emulator") as origin:
        (Path(tmp) / "redis").mkdir()
        redis_proc, redis_server = start_redis(Path(tmp) / "redis")
        try:
            env = opsbot_env(Path(tmp) / "data", redis_server.url, image, POLICY + ROUTES,
                             SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET,
                             OPSBOT_SLACK_API_URL=f"{origin}/api/",
                             OPSBOT_ALERTMANAGER_TOKEN=TOKEN, GITHUB_WEBHOOK_SECRET=SECRET)
            results = asyncio.run(measure(env, origin, levels, args.requests, args.rounds))
        finally:
            redis_proc.kill()
    report(results, levels, (before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
