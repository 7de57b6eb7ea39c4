"""Scale-out on PostgreSQL: what ingress + worker processes cost and what they buy.

    .venv/bin/python bench/scaleout_bench.py [--clicks 30] [--runs 60] [--waiting 1000]
                                             [--requests 150] [--only click,throughput,ack,waiting,cpu]

Real processes throughout: a PostgreSQL 15 of its own with durability on (fsync, synchronous
commit: as deployed, unlike the test suite's), a redis-server, the Slack emulator in this
process, one ``opsbot serve --role ingress`` and ``opsbot worker`` processes (2 slots each),
the sandbox image with its warm pool. Sections:

* **click → execution start**: gated ``redis del`` runs one at a time, each approved by one
  signed click; from sending the click to the ``executions`` row's ``started_at`` (same host
  clock), each click once the workers are idle (warm pools refilled, the CPUs mostly idle).
  Target ≤ 50 ms p99.
* **throughput**: ``--runs`` read-only ``redis info`` runs posted at once through the ingress;
  time until every one is final with 1, 2 and 3 workers, and the same runs on the embedded
  ``opsbot serve`` (SQLite, one process): the per-run cost of PostgreSQL mode.
* **ack**: signed ``/ops redis info`` at 1/8/32 clients to the ingress while the workers run
  what the earlier requests started, against a bare slack-bolt app with
  ``process_before_response=True`` (bench/ack_bench.py's baseline), sample by sample: each
  client sends one request to each in turn, so both see the same background. Two rows, each
  its own pass (Slack is pointed at one endpoint): the ingress's own port, and its acceptor's
  (``OPSBOT_ACCEPTOR_PORT``). Target ≤ 1.2×.
* **cpu** (not in the default set): CPU (user + system, from ``/proc``) per request of bare
  Bolt, the ingress (``help``; ``redis info`` with its hand-off) and the acceptor plus the bot
  process it hands to, one client, no workers.
* **waiting**: ``--waiting`` gated runs parked at their approval; worker RSS before and after,
  then every card approved: time until all left ``waiting`` (resumed) and until all ended.
"""

from __future__ import annotations

import argparse
from datetime import datetime
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import aiohttp
import psycopg

from ack_bench import accepting_port, helper, paired, percentile, sandbox_busy
from sandbox.image import build_image
from tests.fakes.payloads import Payload, SlackClient, block_actions
from tests.fakes.slack import SlackEmulator
from tests.scenarios.harness import APPROVE_ACTION, APPROVER, CHANNEL
from tests.scenarios.process import BotProcess, ProcessHarness, bot_env
from tests.services.postgres import private_postgres
from tests.services.redis import start_redis

EPOCH = "1970-01-01T00:00:00+00:00"
FINAL = "('done', 'failed', 'cancelled', 'interrupted', 'expired')"


class Bench:
    def __init__(self, tmp: Path, slack: SlackEmulator, redis_url: str, image: str, dsn: str):
        self.tmp, self.slack, self.redis_url, self.image, self.dsn = tmp, slack, redis_url, image, dsn
        self.count = 0

    def env(self, name: str, dsn: str | None, **more: str) -> dict[str, str]:
        self.count += 1
        extra = {"OPSBOT_DATABASE_URL": dsn, "OPSBOT_HEARTBEAT_S": "2", "OPSBOT_QUEUE_POLL_S": os.environ.get("POLL", "1")} if dsn else {}
        return bot_env(self.slack, self.tmp / f"{name}-{self.count}", self.redis_url, self.image,
                       **extra, **more)

    @asynccontextmanager
    async def database(self) -> AsyncIterator[str]:
        name = f"bench_{self.count}_{os.getpid()}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        dsn = self.dsn.rsplit("/", 1)[0] + f"/{name}"
        migrate = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "db", "migrate", env=self.env("migrate", dsn), cwd=ROOT)
        if await migrate.wait() != 0:
            raise SystemExit("opsbot db migrate failed")
        try:
            yield dsn
        finally:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(f'drop database if exists "{name}" with (force)')

    @asynccontextmanager
    async def cluster(self, workers: int, **ingress_env: str
                      ) -> AsyncIterator[tuple[ProcessHarness, list[BotProcess], str]]:
        async with self.database() as dsn:
            ingress = BotProcess(self.env("ingress", dsn, **ingress_env),
                                 args=("serve", "--role", "ingress"))
            pool = [BotProcess(self.env("worker", dsn), args=("worker",)) for _ in range(workers)]
            started: list[BotProcess] = []
            try:
                for bot in (ingress, *pool):
                    started.append(await bot.start())
                await pooled(pool)
                async with SlackClient(ingress.events_url) as client:
                    yield ProcessHarness(ingress, self.slack, client), pool, dsn
            finally:
                for bot in started:
                    await bot.terminate()

    @asynccontextmanager
    async def embedded(self) -> AsyncIterator[tuple[ProcessHarness, BotProcess]]:
        bot = await BotProcess(self.env("embedded", None)).start()
        try:
            await pooled([bot])
            async with SlackClient(bot.events_url) as client:
                yield ProcessHarness(bot, self.slack, client), bot
        finally:
            await bot.terminate()


async def pooled(bots: list[BotProcess], timeout: float = 120) -> None:
    """Until each process's sandbox has started (its warm pool filling is part of start-up)."""
    deadline = time.monotonic() + timeout
    while not all(b.instance for b in bots):
        if time.monotonic() > deadline:
            raise SystemExit("a worker's sandbox did not start")
        await asyncio.sleep(0.2)
    await asyncio.sleep(5)  # the warm pool's first containers


def query(dsn: str, sql: str, *args: object) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchall()


async def until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def cards(slack: SlackEmulator) -> list:
    return [m for m in slack.messages(CHANNEL)
            if any(b.get("block_id", "").startswith("approval:") for b in m.blocks)]


def approval_click(h: ProcessHarness, card) -> Payload:
    return block_actions(user=APPROVER, channel=CHANNEL, message_ts=card.ts,
                         action_id=APPROVE_ACTION, value=h.button_value(card), slack=h.slack)


async def approve(h: ProcessHarness, card) -> None:
    await h.post(approval_click(h, card))


# --- sections -----------------------------------------------------------------------------

def cpu_idle(seconds: float = 0.5) -> float:
    """The machine's idle CPU share over ``seconds``."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


async def quiet(workers: list[BotProcess], timeout: float = 60) -> None:
    """Until the workers' warm pools are full again and the machine is mostly idle: the
    previous sample's container removal and pool refill are not this click's cost."""
    deadline = time.monotonic() + timeout
    while any(sandbox_busy(w.instance) for w in workers) or cpu_idle() < 0.8:
        if time.monotonic() > deadline:
            print(f"    (not quiet after {timeout:.0f} s: measuring anyway)", flush=True)
            return
        await asyncio.sleep(0.2)


async def click_to_execution(bench: Bench, clicks: int) -> list[float]:
    latencies = []
    async with bench.cluster(workers=2) as (h, workers, dsn):
        for i in range(clicks):
            seen = len(cards(bench.slack))
            await h.command(f"redis del keys=bench-click-{i}")
            await until(lambda: len(cards(bench.slack)) > seen, 60, "the approval card")
            card = cards(bench.slack)[-1]
            await until(lambda: query(dsn, "select 1 from runs where state = 'waiting'"), 30,
                        "the run to wait")
            await until(lambda: not query(dsn, "select 1 from procrastinate_jobs where status in "
                                          "('todo', 'doing') and task_name = 'opsbot.drive'"),
                        30, "the drive that posted the card to end")  # a person is slower
            await quiet(workers)
            click = approval_click(h, card)  # made before the clock starts: it is not opsbot's
            began = time.time()
            acked = (await h.post(click)).elapsed
            await until(lambda: query(dsn, "select 1 from executions"), 30, "the execution")
            (started,), = query(dsn, "select extract(epoch from started_at) from executions")
            latencies.append(float(started) - began)
            if os.environ.get("BENCH_TRACE"):
                print(f"    {acked * 1000:8.1f} ms  the click's ack (as the client saw it)")
                for kind, at in query(dsn, "select kind, extract(epoch from ts) from audit "
                                      "where ts > to_timestamp(%s) order by id", began):
                    print(f"    {(float(at) - began) * 1000:8.1f} ms  {kind}")
                print(f"    {(float(started) - began) * 1000:8.1f} ms  executions.started_at")
                named = [("ingress", h.bot), *((f"worker{n}", w) for n, w in enumerate(workers))]
                for name, bot in named:
                    for e in bot.logs():
                        at = datetime.fromisoformat(e.get("timestamp", EPOCH)).timestamp()
                        if began <= at <= float(started) + 0.05:
                            print(f"    {(at - began) * 1000:8.1f} ms  {name} {e.get('event')}")
            await until(lambda: not query(dsn, f"select 1 from runs where state not in {FINAL}"),
                        60, "the run to end")
            query_write(dsn, "delete from executions")
    return latencies


def query_write(dsn: str, sql: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


async def burst(h: ProcessHarness, runs: int, ended) -> float:
    began = time.perf_counter()
    await asyncio.gather(*(h.command("redis info section=server") for _ in range(runs)))
    await until(lambda: ended() >= runs, 600, f"{runs} runs to end")
    return time.perf_counter() - began


async def throughput(bench: Bench, runs: int) -> dict[str, float]:
    seconds = {}
    for workers in (1, 2, 3):
        async with bench.cluster(workers) as (h, _, dsn):
            ended = lambda: query(dsn, f"select count(*) from runs where state in {FINAL}")[0][0]  # noqa: E731
            await burst(h, 4, ended)  # warm-up
            seconds[f"postgres, {workers} worker{'s' * (workers > 1)}"] = \
                await burst(h, runs, lambda: ended() - 4)
    async with bench.embedded() as (h, bot):
        from tests.scenarios.process import AuditFile
        audit = AuditFile.of(bot.env)
        ended = lambda: sum(1 for _, state in audit.runs() if state.final)  # noqa: E731
        await burst(h, 4, ended)
        seconds["sqlite, embedded serve"] = await burst(h, runs, lambda: ended() - 4)
    return seconds


ACK_ROWS = ("ingress port", "its acceptor")


async def ack(bench: Bench, requests: int, levels: list[int]
              ) -> dict[tuple[int, str], tuple[list, list]]:
    """Per level and row: (the row's latencies, bare Bolt's taken in turn with them). Slack
    is pointed at one endpoint of a deployment, so each row is its own pass with bare Bolt:
    the ingress's own port, then its acceptor's."""
    rows: dict[tuple[int, str], tuple[list, list]] = {}
    with helper("bare-fast", f"{bench.slack.base_url}") as port:
        bare = f"http://127.0.0.1:{port}/slack/events"
        async with bench.cluster(workers=2, OPSBOT_ACCEPTOR_PORT="0") as (h, _, _):
            accepting = await accepting_port(h.bot)
            ours = dict(zip(ACK_ROWS, (h.bot.events_url,
                                       f"http://127.0.0.1:{accepting}/slack/events")))
            for url in ours.values():
                await paired((url, bare), "redis info", bench.slack.origin, 20, 2)
            for clients in levels:
                for name, url in ours.items():
                    rows[(clients, name)] = await paired(
                        (url, bare), "redis info", bench.slack.origin, requests, clients)
    return rows


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_per_request(bench: Bench, requests: int) -> list[tuple[str, float, float]]:
    """CPU (user + system) per request of each process that handles it, one client, no
    workers (the runs only queue): (row, ms of CPU per request, p50 ms)."""
    rows = []
    with helper("bare-fast", f"{bench.slack.base_url}") as port:
        bare = (f"http://127.0.0.1:{port}/slack/events", _pid_of("ack_bench.py --serve bare-fast"))
        async with bench.cluster(workers=0, OPSBOT_ACCEPTOR_PORT="0") as (h, _, _):
            accepting = await accepting_port(h.bot)
            ingress = (h.bot.events_url, h.bot.pid)
            acceptor = (f"http://127.0.0.1:{accepting}/slack/events", int(h.bot.acceptor["pid"]))
            for name, (url, pid), text, also in (
                    ("bare Bolt, process_before_response=True", bare, "redis info", None),
                    ("ingress /ops help (answer in the ack)", ingress, "help", None),
                    ("ingress /ops redis info (ack + hand-off)", ingress, "redis info", None),
                    ("acceptor /ops redis info", acceptor, "redis info", h.bot.pid)):
                await paired((url,), text, bench.slack.origin, 30, 1)  # warm
                await asyncio.sleep(1)
                before = cpu_seconds(pid), cpu_seconds(also) if also else 0.0
                (lat,) = await paired((url,), text, bench.slack.origin, requests, 1)
                await asyncio.sleep(1.5)  # the hand-offs after the last answers
                p50 = statistics.median(lat) * 1000
                rows.append((name, (cpu_seconds(pid) - before[0]) / requests * 1000, p50))
                if also:
                    rows.append(("  its bot process, same requests",
                                 (cpu_seconds(also) - before[1]) / requests * 1000, p50))
    return rows


def _pid_of(pattern: str) -> int:
    """The pid of the one process whose command line matches ``pattern`` (pgrep -f)."""
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    if len(found) != 1:
        raise SystemExit(f"expected one process matching {pattern!r}, found {found}")
    return int(found[0])


def rss_mb(bots: list[BotProcess]) -> float:
    total = 0
    for bot in bots:
        status = Path(f"/proc/{bot.proc.pid}/status").read_text()
        total += next(int(line.split()[1]) for line in status.splitlines()
                      if line.startswith("VmRSS:"))
    return total / 1024


async def waiting(bench: Bench, count: int) -> dict[str, float]:
    out: dict[str, float] = {}
    async with bench.cluster(workers=2) as (h, workers, dsn):
        out["worker RSS before (MB, both)"] = rss_mb(workers)
        began = time.perf_counter()
        sem = asyncio.Semaphore(8)

        async def ask(i: int) -> None:
            async with sem:
                await h.command(f"redis del keys=bench-wait-{i}")

        await asyncio.gather(*(ask(i) for i in range(count)))
        await until(lambda: query(dsn, "select count(*) from runs where state = 'waiting'")[0][0]
                    >= count, 2 * count + 600, f"{count} runs to wait")
        out["park them (s)"] = time.perf_counter() - began
        await until(lambda: len(cards(bench.slack)) >= count, 120, "every card")
        out["worker RSS with them waiting (MB, both)"] = rss_mb(workers)
        began = time.perf_counter()

        async def click(card) -> None:
            async with sem:
                await approve(h, card)

        await asyncio.gather(*(click(c) for c in cards(bench.slack)[-count:]))
        await until(lambda: not query(dsn, "select 1 from runs where state = 'waiting'"), 3 * count + 600,
                    "every run to resume")
        out["resume them all (s)"] = time.perf_counter() - began
        await until(lambda: not query(dsn, f"select 1 from runs where state not in {FINAL}"), 4 * count + 600,
                    "every run to end")
        out["and run them all (s)"] = time.perf_counter() - began
        out["worker RSS after (MB, both)"] = rss_mb(workers)
    return out


# --- report -------------------------------------------------------------------------------

def ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


async def main_async(args: argparse.Namespace, tmp: Path, image: str) -> None:
    only = set(args.only.split(","))
    (tmp / "redis").mkdir()
    redis_proc, redis_server = start_redis(tmp / "redis")
    try:
        with private_postgres(durable=True) as dsn, SlackEmulator() as slack:
            slack.add_channel(CHANNEL, "ops")
            bench = Bench(tmp, slack, redis_server.url, image, dsn)
            if "click" in only:
                lat = await click_to_execution(bench, args.clicks)
                print(f"\nclick → execution start, PostgreSQL mode, 2 idle workers (n={len(lat)}): "
                      f"p50 {ms(lat, 0.5):.1f} ms, p99 {ms(lat, 0.99):.1f} ms, max "
                      f"{max(lat) * 1000:.1f} ms (target ≤ 50 ms p99); load {os.getloadavg()[0]:.1f}",
                      flush=True)
            if "throughput" in only:
                seconds = await throughput(bench, args.runs)
                print(f"\n{args.runs} `redis info` runs posted at once; load {os.getloadavg()[0]:.1f}")
                base = seconds["sqlite, embedded serve"]
                for name, took in seconds.items():
                    print(f"  {name:26} {took:6.1f} s  {args.runs / took:5.1f} runs/s  "
                          f"{took / args.runs * 1000:6.0f} ms/run  ×{took / base:4.2f} of embedded",
                          flush=True)
            if "ack" in only:
                levels = [1, 8, 32]
                rows = await ack(bench, args.requests, levels)
                print(f"\nack of /ops redis info: the ingress (workers busy) vs bare Bolt "
                      f"process_before_response=True; load {os.getloadavg()[0]:.1f}")
                for (clients, name), (mine, bare) in rows.items():
                    r50 = statistics.median(mine) / statistics.median(bare)
                    r99 = percentile(mine, 0.99) / percentile(bare, 0.99)
                    print(f"  {clients:>2} clients  {name:12}  p50 {ms(mine, 0.5):6.1f} p99 "
                          f"{ms(mine, 0.99):6.1f}  bare p50 {ms(bare, 0.5):6.1f} p99 "
                          f"{ms(bare, 0.99):6.1f} ms  ×p50 {r50:4.2f} ×p99 {r99:4.2f}"
                          f"{'  MISS' if max(r50, r99) > 1.2 else ''}", flush=True)
            if "cpu" in only:
                rows = await cpu_per_request(bench, args.requests)
                print(f"\nCPU per signed /ops request, one client, no workers; load "
                      f"{os.getloadavg()[0]:.1f}")
                for name, cpu, p50 in rows:
                    print(f"  {name:44} {cpu:5.2f} ms/request   p50 {p50:5.2f} ms", flush=True)
            if "waiting" in only:
                out = await waiting(bench, args.waiting)
                print(f"\n{args.waiting} runs waiting on approval, 2 workers; "
                      f"load {os.getloadavg()[0]:.1f}")
                for name, value in out.items():
                    print(f"  {name:42} {value:8.1f}", flush=True)
    finally:
        redis_proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--requests", type=int, default=150, help="per ack level and row")
    parser.add_argument("--waiting", type=int, default=1000)
    parser.add_argument("--only", default="click,throughput,ack,waiting")
    args = parser.parse_args()
    image = build_image(log=lambda line: print(line, file=sys.stderr))
    print(f"load average {os.getloadavg()[0]:.1f} at start, {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main_async(args, Path(tmp), image))


if __name__ == "__main__":
    main()
