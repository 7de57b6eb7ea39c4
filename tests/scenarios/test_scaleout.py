"""Issue "start here" (scale-out): opsbot as several real processes sharing one PostgreSQL.

Two ingress processes (`opsbot serve --role ingress`) and three workers (`opsbot worker`), the
Slack emulator, a private Redis whose `INFO commandstats` counts every DEL the sandboxed actions
send. Forty approval-gated `redis del` runs are requested through both ingresses; every card is
clicked by two approvers at the same instant through different ingresses; one worker is
SIGKILLed while it executes an action and another is SIGSTOPped past the stalled-job timeout,
then continued. Every run must end with exactly one report, every approved action must run at
most once (exactly once unless its worker died inside it, which is then reported), and no two
drives of one thread may overlap. With the fences off (test-only setting) the same scenario
must show a duplicate: the test can see the bug it guards against.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.fakes.payloads import SlackClient
from tests.fakes.server import wait_until
from tests.fakes.slack import SlackEmulator, slack_emulator  # noqa: F401 (fixture)
from tests.scenarios.harness import APPROVER, CHANNEL, LEAD, RUN_ID
from tests.scenarios.process import (  # noqa: F401 (fixture)
    ROOT,
    BotProcess,
    BotProcesses,
    ProcessHarness,
    bot_env,
    bot_processes,
    leftovers,
)
from tests.services.redis import private_redis

pytestmark = pytest.mark.docker
HEARTBEAT_S = 0.5  # stalled after 3 × 0.5 + 1 = 2.5 s; swept every second


@dataclass
class Cluster:
    ingresses: list[ProcessHarness]
    workers: list[BotProcess]
    dsn: str

    def query(self, sql: str, *args) -> list[tuple]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(sql, args).fetchall()


async def start_cluster(processes: BotProcesses, slack: SlackEmulator, dsn: str, redis_url: str,
                        image: str, tmp: Path, workers: int = 3, **more: str) -> Cluster:
    shared = {"OPSBOT_DATABASE_URL": dsn, "OPSBOT_HEARTBEAT_S": str(HEARTBEAT_S),
              "OPSBOT_QUEUE_POLL_S": "0.2", "OPSBOT_WORKERS": "2",
              "OPSBOT_DB_TX_IDLE_TIMEOUT_S": "2", **more}  # a frozen worker's locks go in 2 s
    env = lambda name: bot_env(slack, tmp / name, redis_url, image, **shared)  # noqa: E731
    migrate = subprocess.run([sys.executable, "-m", "bot.cli", "db", "migrate"], env=env("migrate"),
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    ingress = ("serve", "--role", "ingress")
    # an ingress needs neither Docker nor Vault: give it none that answers
    without = {"DOCKER_HOST": "unix:///nonexistent/docker.sock",
               "VAULT_ADDR": "http://127.0.0.1:9", "VAULT_TOKEN": "none"}
    started = await asyncio.gather(
        *(processes.start({**env(f"ingress{i}"), **without}, args=ingress) for i in range(2)),
        *(processes.start(env(f"worker{i}"), args=("worker",)) for i in range(workers)))
    clients = [SlackClient(bot.events_url) for bot in started[:2]]
    harnesses = [ProcessHarness(bot, slack, await client.__aenter__())
                 for bot, client in zip(started[:2], clients, strict=True)]
    return Cluster(harnesses, list(started[2:]), dsn)


def worker_of(cluster: Cluster, instance: str) -> BotProcess | None:
    return next((w for w in cluster.workers if w.instance == instance), None)


async def in_flight(cluster: Cluster, worker: BotProcess) -> str:
    """Until ``worker`` has claimed an execution it has not finished: it is inside an action
    (the row is written with the fences off too; only its guarding is off). Returns its run."""
    rows = await wait_until(lambda: cluster.query(
        "select run_id from executions where worker = %s and finished_at is null",
        worker.instance), 120, lambda: f"worker {worker.instance} never started an action")
    return rows[0][0]


Thaw = Callable[[Cluster, str], Callable[[], bool]]  # (cluster, frozen run) -> predicate


async def faults(cluster: Cluster, thawed: Thaw) -> str:
    """SIGKILL worker 0 inside an action; SIGSTOP worker 1 inside one until ``thawed``
    says its stalled job was taken up elsewhere (bounced off the lease, or with the fences off,
    run again), then SIGCONT it. Returns the frozen worker's run."""
    killed, frozen = cluster.workers[0], cluster.workers[1]
    await in_flight(cluster, killed)
    await killed.kill()
    run = await in_flight(cluster, frozen)
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        await wait_until(thawed(cluster, run), 120, lambda: "the frozen worker's job was never taken up; "
                         + stuck(cluster))
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    return run


def stuck(cluster: Cluster) -> str:
    """The runs not yet final and their drive jobs, for a failure message."""
    return str(cluster.query(
        "select r.id, r.state, j.id, j.status, j.attempts, j.worker_id from runs r "
        "left join procrastinate_jobs j on j.lock = r.thread_id "
        "where r.state not in ('done', 'failed', 'cancelled', 'interrupted')"))


def live_events(cluster: Cluster) -> list[dict]:
    """What the workers neither killed nor frozen have logged so far."""
    return [e for w in cluster.workers[2:] for e in w.logs()]


def run_elsewhere(cluster: Cluster, run: str) -> Callable[[], bool]:
    """From now on: a live worker has run a container for ``run`` (its preview, earlier, does
    not count). With the fences off, that is the frozen worker's action run a second time."""
    def containers() -> int:
        return sum(e.get("event") == "sandbox.run" and e.get("run_id") == run
                   for e in live_events(cluster))
    before = containers()
    return lambda: containers() > before


def bounced(cluster: Cluster, run: str) -> Callable[[], bool]:
    """A live worker found a thread's lease held (by the frozen one) and backed off."""
    return lambda: any(e.get("event") == "lease.busy" for e in live_events(cluster))


async def request_and_approve(cluster: Cluster, redis, runs: int,
                              thawed: Thaw) -> tuple[list[tuple[str, str]], str]:
    """``runs`` gated deletes through both ingresses; every card clicked twice at once.
    Returns each run with its thread, and the run the frozen worker was inside."""
    for i in range(runs):
        redis.set(f"k{i}", "v")
    a, b = cluster.ingresses
    for i in range(runs):
        await cluster.ingresses[i % 2].command(f"redis del keys=k{i}")
    threads = [await a.run_thread(index=i, timeout=120) for i in range(runs)]
    cards = await asyncio.gather(*(a.card(t, timeout=120) for t in threads))
    await wait_until(lambda: len(cluster.query("select 1 from runs where state = 'waiting'")) == runs,
                     120, lambda: str(cluster.query("select state, count(*) from runs group by 1")))
    fault = asyncio.create_task(faults(cluster, thawed))
    await asyncio.gather(*(click for card in cards
                           for click in (a.click(card, APPROVER), b.click(card, LEAD))))
    frozen_run = await fault
    located = [(RUN_ID.search(a.slack.message(CHANNEL, t).text).group(1), t) for t in threads]
    return located, frozen_run


async def settled(cluster: Cluster, runs: int) -> None:
    await wait_until(lambda: len(cluster.query(
        "select 1 from runs where state in ('done', 'failed', 'cancelled', 'interrupted')")) == runs,
        180, lambda: str(cluster.query(
            "select r.id, r.state, r.thread_id, j.id, j.status, j.attempts, j.worker_id, j.args "
            "from runs r left join procrastinate_jobs j on j.lock = r.thread_id "
            "where r.state not in ('done', 'interrupted')")))
    await wait_until(lambda: not cluster.query(
        "select 1 from procrastinate_jobs where status in ('todo', 'doing') "
        "and task_name = 'opsbot.drive'"), 60, lambda: str(cluster.query(
            "select status, count(*) from procrastinate_jobs group by 1")))


def overlaps(cluster: Cluster) -> list[str]:
    """Pairs of drives of one thread whose spans overlap, from every worker's log."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for worker in cluster.workers:
        for event in worker.logs():
            if event.get("event") == "drive.span":
                spans.setdefault(event["thread_id"], []).append((event["began"], event["ended"]))
    found = []
    for thread, mine in spans.items():
        for (b1, e1), (b2, e2) in itertools.combinations(sorted(mine), 2):
            if b2 < e1:
                found.append(f"{thread}: {b1:.3f}-{e1:.3f} and {b2:.3f}-{e2:.3f}")
    return found


def del_calls(redis) -> int:
    return int(redis.info("commandstats").get("cmdstat_del", {}).get("calls", 0))


async def test_forty_runs_two_ingresses_three_workers_a_kill_and_a_freeze(
        bot_processes: BotProcesses, slack_emulator: SlackEmulator,  # noqa: F811
        postgres_database, sandbox_image, tmp_path):
    runs = 40
    with private_redis(tmp_path / "redis") as server:
        redis = server.client()
        cluster = await start_cluster(bot_processes, slack_emulator, postgres_database,
                                      server.url, sandbox_image, tmp_path)
        located, _ = await request_and_approve(cluster, redis, runs, bounced)
        await settled(cluster, runs)

        states = dict(cluster.query("select id, state from runs"))
        interrupted = {r for r, s in states.items() if s == "interrupted"}
        assert set(states.values()) <= {"done", "interrupted"}, Counter(states.values())
        assert interrupted, "the SIGKILLed worker was inside an action"
        a = cluster.ingresses[0]
        for run_id, thread in located:
            reports = [m for m in a.slack.thread(CHANNEL, thread) if "*Run `r-" in m.text]
            assert len(reports) == 1, f"{run_id}: {len(reports)} reports"
        execs = Counter(r for (r,) in cluster.query(  # the del, not its follow-up check
            "select run_id from audit where kind = 'sandbox.exec' "
            "and right(data->>'call_id', 6) <> '.check'"))
        assert all(n == 1 for n in execs.values()), "an action ran twice"
        done = {r for r, s in states.items() if s == "done"}
        assert set(execs) >= done
        keys = dict(cluster.query("select id, split_part(ref->'task'->>'text', '=', 2) from runs"))
        assert not [r for r in done if redis.exists(keys[r])], "every done run deleted its key"
        assert del_calls(redis) <= runs, "no DEL sent twice"
        assert len(cluster.query("select 1 from executions")) == runs
        assert overlaps(cluster) == []
        decisions = Counter(r for (r,) in cluster.query(
            "select run_id from audit where kind = 'approval.decision'"))
        assert set(decisions.values()) == {1} and len(decisions) == runs
        notices = [m for _, t in located for m in a.slack.thread(CHANNEL, t)
                   if "was interrupted" in m.text]
        assert len(notices) == len(interrupted)
        already = [e for u in (APPROVER, LEAD) for e in a.slack.ephemerals(u)
                   if "already approved by" in e.text]
        assert len(already) == runs, "every second click was told it came too late"


async def test_without_the_fences_the_same_faults_run_an_action_twice(
        bot_processes: BotProcesses, slack_emulator: SlackEmulator,  # noqa: F811
        postgres_database, sandbox_image, tmp_path):
    runs = 20
    with private_redis(tmp_path / "redis") as server:
        redis = server.client()
        cluster = await start_cluster(bot_processes, slack_emulator, postgres_database,
                                      server.url, sandbox_image, tmp_path,
                                      OPSBOT_UNSAFE_NO_FENCING="1")
        # Without the lease and the execute guard, another worker runs the frozen worker's
        # action again while it is stopped; once continued, the frozen worker carries on with it.
        # The thaw waits for that second execution (a live worker's own log: the frozen
        # process writes nothing while stopped). Whether the frozen copy's DEL then reaches Redis depends on
        # where the stop caught it (its egress forwarder lives in the frozen process), so the
        # duplicate is asserted where it is certain: two containers ran one call.
        _, frozen = await request_and_approve(cluster, redis, runs, run_elsewhere)
        containers = lambda: cluster.query(  # noqa: E731
            "select data->>'container' from audit where kind = 'sandbox.exec' and run_id = %s",
            frozen)
        await wait_until(lambda: len(containers()) >= 2, 60, lambda: str(containers()))
        assert len(set(containers())) >= 2
        await wait_until(lambda: overlaps(cluster), 60, lambda: "no two drives overlapped")


async def test_cancel_through_one_ingress_stops_a_run_held_behind_the_other(
        bot_processes: BotProcesses, slack_emulator: SlackEmulator,  # noqa: F811
        postgres_database, sandbox_image, docker_client, tmp_path):
    """A read blocks inside its container (the test pauses its Redis); `/ops cancel` sent to
    the other ingress reaches the worker that holds the run, which stops it. Meanwhile the two
    workers' periodic sweep fires once per tick, not once per worker."""
    with private_redis(tmp_path / "redis") as server:
        cluster = await start_cluster(bot_processes, slack_emulator, postgres_database,
                                      server.url, sandbox_image, tmp_path, workers=2)
        server.client().execute_command("CLIENT", "PAUSE", "30000")
        a, b = cluster.ingresses
        await a.command("redis info")
        thread = await a.run_thread(timeout=60)
        await a.slack.wait_for(lambda: "Running `redis info` in the sandbox"
                               in a.slack.message(CHANNEL, thread).text, 60)
        run_id = RUN_ID.search(a.slack.message(CHANNEL, thread).text).group(1)
        await b.command(f"cancel {run_id}")
        said = await b.slack.wait_for(lambda: [r for r in b.slack.responses()
                                               if run_id in str(r.body)], 30)
        assert "cancelled" in str(said[-1].body)
        report = await a.report(thread, timeout=30)
        assert "cancelled by <@UREQ1>" in report.text
        assert cluster.query("select state from runs where id = %s", run_id) == [("cancelled",)]
        await wait_until(lambda: not [c for w in cluster.workers
                                      for c in leftovers(docker_client, w.instance)
                                      .containers.values() if run_id in str(c["Names"])],
                         30, lambda: "the cancelled action's container is still there")
        ticks = cluster.query("select args->>'timestamp', count(*) from procrastinate_jobs "
                              "where task_name = 'opsbot.retry_stalled' group by 1")
        assert len(ticks) >= 3 and all(n == 1 for _, n in ticks), ticks
