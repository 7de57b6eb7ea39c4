"""One read-only action end to end: run queue → policy → credentials from OpenBao → sandbox
container → result → report, against bare ``docker run --rm <image> true``.

Run as root on a machine with Docker, redis-server and the test extra installed (``bao``)::

    .venv/bin/python bench/action_bench.py [--samples 30]

What runs is opsbot's own pipeline, built the way ``bot/wiring.py`` builds it (RunManager,
LangGraph graph with its SQLite checkpointer, SQLite audit and run store, the policy engine,
the Vault broker, the Docker sandbox), for the typed command ``redis info section=server``
against a Redis with ``requirepass`` whose password exists only in an OpenBao dev server, read
by a child token minted for each action and revoked after it. The only stand-in is the surface
(Slack): a no-op that tells the bench when the report is posted. One sample = submit → report.

Rows, interleaved sample by sample so that machine noise hits all of them alike:
  * bare: ``docker run --rm <image> true`` through the docker CLI (no hardening, no network,
    no I/O), the baseline;
  * cold: ``warm_pool=0``; the action creates its egress network, container, forwarder and
    firewall rules, then runs;
  * warm: ``warm_pool=2``, the pool refilled between actions (a chat bot's pace);
  * dynamic: as warm, but the action logs in as a Redis ACL user that OpenBao's database
    engine creates for it and drops afterwards (``deploy/vault/dynamic-credentials.sh`` roles)
    instead of reading the static password from KV.
Targets (issue 16): cold p50 ≤ 1.2 × bare p50; warm p50 ≤ 0.15 × bare p50 (issue 3 asked for
1.5 and 0.5). A sample ends when the report is posted; the credentials' revocation runs after
it (graph/cleanup.py) and is shown apart. Issue 10 asks for
the cost of dynamic credentials per action: mint + revoke of the dynamic row against the warm
(static KV read) row's, printed after the table.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import structlog

from graph.build import build_graph
from graph.checkpoints import sqlite_graphs
from graph.deps import GraphDeps, Limits
from graph.driver import Driver
from graph.lease import LocalLease
from graph.policy import Policy
from graph.queue import LocalQueue
from graph.records.sqlite import SqliteRecords
from graph.runs import RunManager
from graph.surface import Report, RunRef, RunState
from graph.task import Source, Task
from sandbox.config import SandboxConfig
from sandbox.credentials import CredentialBroker, VaultConfig
from sandbox.image import build_image
from sandbox.protocol import SandboxOutcome, SandboxRequest
from sandbox.runner import SandboxRunner
from tests.scenarios.test_vault_e2e import parent_token
from tests.services.openbao import start_openbao
from tests.services.redis import start_redis
from tests.services.vault_engines import REDIS_READ, REDIS_WRITE, run_setup
from tools import TOOLSETS
from tools.base import SecretKind, SecretRef
from tools.catalog import Catalog
from tools.redis import RedisConfig

COMMAND = "redis info section=server"
SECRET = "kv/data/redis/prod"
TARGETS = {"cold": 1.2, "warm": 0.15}  # issue 16 (issue 3 asked for 1.5 and 0.5)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 30 samples is the slowest one)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Spans:
    """Where one action's time went, recorded by the timing wrappers below."""

    mint: float = 0.0
    revoke: float = 0.0
    sandbox: float = 0.0
    outcome: SandboxOutcome | None = None


class TimedExecutor:
    """The real runner behind graph.deps.Executor, noting each run's time and outcome."""

    def __init__(self, runner: SandboxRunner, spans: Callable[[], Spans]):
        self.runner, self.spans = runner, spans

    async def run(self, request: SandboxRequest, on_progress=None) -> SandboxOutcome:
        began = time.perf_counter()
        outcome = await self.runner.run(request, on_progress=on_progress)
        self.spans().sandbox, self.spans().outcome = time.perf_counter() - began, outcome
        return outcome


class TimedBroker:
    """The real broker behind graph.deps.Broker, noting mint and revoke times."""

    def __init__(self, broker: CredentialBroker, spans: Callable[[], Spans]):
        self.broker, self.spans = broker, spans

    async def mint(self, run_id, call_id, secrets, ttl_s):
        began = time.perf_counter()
        lease = await self.broker.mint(run_id, call_id, secrets, ttl_s)
        self.spans().mint = time.perf_counter() - began
        return lease

    async def revoke(self, lease) -> None:
        spans, began = self.spans(), time.perf_counter()  # after the answer, in the background
        await self.broker.revoke(lease)
        spans.revoke = time.perf_counter() - began


@dataclass
class BenchSurface:
    """A surface that posts nothing and resolves a future when a run's report arrives."""

    done: dict[str, asyncio.Future[Report]] = field(default_factory=dict)

    def waiter(self, run_id: str) -> asyncio.Future[Report]:
        return self.done.setdefault(run_id, asyncio.get_running_loop().create_future())

    async def open_run(self, run: RunRef, checklist) -> RunRef:
        return run.model_copy(update={"thread_ts": run.run_id, "status_ts": run.run_id})

    async def progress(self, run, checklist, final: bool = False) -> None:
        return None

    async def answer(self, run, reply_id: str, text: str, tools: bool = False) -> None:
        return None

    async def ask_approval(self, run, request) -> str | None:
        raise AssertionError("a tier-0 action must not ask for approval")

    async def update_approval(self, run, request) -> None:
        return None

    async def report(self, run: RunRef, report: Report) -> None:
        self.waiter(run.run_id).set_result(report)

    async def say(self, run, text: str) -> None:
        return None

    async def refused(self, task, text: str) -> None:
        raise AssertionError(f"the bench's run was refused: {text}")


@dataclass
class Pipeline:
    """opsbot's run pipeline over one sandbox runner."""

    manager: RunManager
    surface: BenchSurface
    runner: SandboxRunner
    queue: LocalQueue
    spans: list[Spans] = field(default_factory=list)

    async def action(self) -> float:
        """Submit the command and wait for its report; returns seconds, checks the result."""
        self.spans.append(Spans())
        began = time.perf_counter()
        run = await self.manager.submit(Task(source=Source.CONSOLE, team="T0", channel="C0",
                                             user="U0", text=COMMAND))
        report = await asyncio.wait_for(self.surface.waiter(run.run_id), 120)
        elapsed = time.perf_counter() - began
        call = report.calls[0] if report.calls else None
        if report.state is not RunState.DONE or call is None or "redis_version:" not in call.output:
            raise SystemExit(f"the action failed: {report.model_dump_json()}")
        return elapsed


@asynccontextmanager
async def pipeline(workdir: Path, config: SandboxConfig, catalog: Catalog,
                   broker: CredentialBroker) -> AsyncIterator[Pipeline]:
    """Wired the way ``bot/wiring.py`` wires an embedded ``opsbot serve`` (one worker)."""
    async with AsyncExitStack() as stack:
        runner = await SandboxRunner.start(config)
        stack.push_async_callback(runner.close)
        records = SqliteRecords(workdir / "opsbot.sqlite")
        stack.push_async_callback(records.close)
        queue, surface = LocalQueue(1), BenchSurface()
        stack.push_async_callback(queue.stop)
        manager = RunManager(records, queue, surface)
        spans: list[Spans] = []
        deps = GraphDeps(catalog=catalog, policy=Policy(), audit=records.audit,
                         executions=records.executions, worker=config.instance, limits=Limits(),
                         executor=TimedExecutor(runner, lambda: spans[-1]),
                         broker=TimedBroker(broker, lambda: spans[-1]))
        graphs = await stack.enter_async_context(
            sqlite_graphs(workdir / "checkpoints.sqlite", lambda saver: build_graph(deps, saver)))
        driver = Driver(graphs, records, queue, LocalLease(), surface, manager.desk,
                        manager.checklists, cleanup=deps.cleanup)
        await queue.start(driver.handle)
        yield Pipeline(manager, surface, runner, queue, spans)


async def bare_docker_run(image: str) -> float:
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec("docker", "run", "--rm", image, "true")
    if await proc.wait() != 0:
        raise SystemExit(f"docker run --rm {image} true failed")
    return time.perf_counter() - began


async def quiet(*pipelines: Pipeline) -> None:
    """Let removals finish and pools refill, so every sample starts from the same state."""
    for p in pipelines:
        await p.queue.drain()  # the run ended: its credentials revoked (after the answer)
        await p.runner.settle()
        await p.runner.pool.wait_ready()
        await p.runner.provisioner.spares.wait_ready()


async def measure(image: str, workdir: Path, catalogs: dict[str, Catalog],
                  broker: CredentialBroker, samples: int
                  ) -> dict[str, tuple[list[float], list[Spans]]]:
    # as the runtime configures a deployment of Redis alone (bot/wiring.py: sandbox_config)
    configs = {"cold": SandboxConfig(instance="benchactcold", image=image, warm_pool=0,
                                     preload=["redis"]),
               "warm": SandboxConfig(instance="benchactwarm", image=image, warm_pool=2,
                                     preload=["redis"]),
               "dynamic": SandboxConfig(instance="benchactdyn", image=image, warm_pool=2,
                                        preload=["redis"])}
    async with AsyncExitStack() as stack:
        pipes = {}
        for name, config in configs.items():
            (workdir / name).mkdir()
            catalog = catalogs["dynamic" if name == "dynamic" else "static"]
            pipes[name] = await stack.enter_async_context(
                pipeline(workdir / name, config, catalog, broker))
        rows: dict[str, list[float]] = {"bare": [], **{name: [] for name in pipes}}
        steps: dict[str, Callable[[], Awaitable[float]]] = {
            "bare": lambda: bare_docker_run(image), **{n: p.action for n, p in pipes.items()}}
        for step in steps.values():  # warm-up: imports, first connections, page cache
            await quiet(*pipes.values())
            await step()
        await quiet(*pipes.values())  # the last warm-up's revocation is timed into its spans
        for p in pipes.values():
            p.spans.clear()
        for _ in range(samples):
            for name, step in steps.items():
                await quiet(*pipes.values())
                rows[name].append(await step())
        return {"bare": (rows["bare"], []),
                **{name: (rows[name], p.spans) for name, p in pipes.items()}}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def report(results: dict[str, tuple[list[float], list[Spans]]], samples: int,
           load: tuple[float, float]) -> None:
    base = statistics.median(results["bare"][0])
    print(f"\n`/ops {COMMAND}` end to end, {samples} samples per row; ratio = p50 / bare p50; "
          f"load average {load[0]:.1f} before, {load[1]:.1f} after, {os.cpu_count()} CPUs\n")
    print(f"{'':46} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6} {'target':>7} {'pooled':>7}")
    names = {"bare": "bare: docker run --rm <image> true",
             "cold": "opsbot action, cold (warm_pool=0)",
             "warm": "opsbot action, warm pool (refilled)",
             "dynamic": "warm, dynamic Redis ACL user per action"}
    for key, (times, spans) in results.items():
        p50 = statistics.median(times)
        target = TARGETS.get(key)
        verdict = "" if target is None else f"≤{target:g} " + ("ok" if p50 / base <= target else "MISS")
        pooled = f"{sum(bool(s.outcome and s.outcome.pooled) for s in spans)}/{len(spans)}" if spans else ""
        print(f"{names[key]:46} {_ms(p50)} {_ms(percentile(times, 0.99))} {p50 / base:5.2f}x "
              f"{verdict:>7} {pooled:>7}")
    credentials(results)
    for key in ("cold", "warm", "dynamic"):
        breakdown(key, *results[key])


async def broker_alone(broker: CredentialBroker, password: str | None, samples: int
                       ) -> dict[str, list[float]]:
    """Mint + revoke per credential kind, without the rest of the pipeline around it."""
    kinds = {
        "static KV read": [SecretRef(name="redis_password", path=SECRET, key="password")],
        "dynamic Redis ACL user": SecretRef.login("redis", REDIS_READ),
        "SSH certificate (key pair + sign)": [
            SecretRef(name=f"ssh_{k}", path="ssh/sign/opsbot", key=k, kind=SecretKind.SSH,
                      params=(("principal", "opsbot-observe"),))
            for k in ("private_key", "certificate")],
    }
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(samples):
        for name, refs in kinds.items():
            began = time.perf_counter()
            await broker.revoke(await broker.mint("bench", "c", refs, 20))
            times[name].append(time.perf_counter() - began)
    return times


def credentials(results: dict[str, tuple[list[float], list[Spans]]]) -> None:
    """Issue 10: what a credential that dies with the action costs, against the static read."""
    def cost(key: str) -> tuple[float, float, float]:
        spans = results[key][1]
        mint = statistics.median(s.mint for s in spans)
        revoke = statistics.median(s.revoke for s in spans)
        both = statistics.median(s.mint + s.revoke for s in spans)
        return mint, revoke, both

    static, dynamic = cost("warm"), cost("dynamic")
    print("\ncredentials per action, median ms (mint / revoke / mint+revoke):")
    print(f"  static KV read (child token, read, revoke)      {static[0] * 1000:6.1f} / "
          f"{static[1] * 1000:6.1f} / {static[2] * 1000:6.1f}")
    print(f"  dynamic Redis ACL user (create, DELUSER)        {dynamic[0] * 1000:6.1f} / "
          f"{dynamic[1] * 1000:6.1f} / {dynamic[2] * 1000:6.1f}   "
          f"{dynamic[2] / static[2]:.2f}x the static read")
    end_to_end = statistics.median(results["dynamic"][0]) - statistics.median(results["warm"][0])
    print(f"  end to end, warm p50: dynamic - static = {end_to_end * 1000:+.1f} ms")


def breakdown(key: str, times: list[float], spans: list[Spans]) -> None:
    """Median ms per stage of the critical path (sandbox phases from the runner's outcome)."""
    parts: dict[str, list[float]] = {}
    for total, s in zip(times, spans, strict=True):
        outcome = s.outcome
        phases = outcome.phases if outcome else {}
        stages = {"vault mint": s.mint, **{f"sandbox {k}": v for k, v in phases.items()},
                  "sandbox other": s.sandbox - sum(phases.values()),
                  "queue+policy+graph+audit": total - s.mint - s.sandbox,
                  "(after the answer) vault revoke": s.revoke}
        for name, value in stages.items():
            parts.setdefault(name, []).append(value)
    shown = "  ".join(f"{name} {statistics.median(v) * 1000:.1f}" for name, v in parts.items())
    print(f"\n{key}, median ms per stage:\n  {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    image = build_image(log=lambda line: print(line, file=sys.stderr))
    before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "bao").mkdir()
        (workdir / "redis").mkdir()
        bao_proc, vault = start_openbao(workdir / "bao")
        redis_proc, redis_server = start_redis(workdir / "redis", password="bench-redis-password")
        try:
            vault.put(SECRET, password=redis_server.password)
            run_setup(vault, {"REDIS_HOST": redis_server.host, "REDIS_PORT": str(redis_server.port),
                              "REDIS_ADMIN_PASSWORD": redis_server.password or "",
                              "OPSBOT_SSH": "1"})
            broker = CredentialBroker(VaultConfig(addr=vault.addr, token=parent_token(vault)))
            catalogs = {
                "static": Catalog(TOOLSETS, {"redis": RedisConfig(
                    url=redis_server.url, password_secret=f"{SECRET}#password")}),
                "dynamic": Catalog(TOOLSETS, {"redis": RedisConfig(
                    url=redis_server.url, read_role=REDIS_READ, write_role=REDIS_WRITE)})}
            results = asyncio.run(measure(image, workdir, catalogs, broker, args.samples))
            alone = asyncio.run(broker_alone(broker, redis_server.password, args.samples))
        finally:
            redis_proc.kill()
            bao_proc.kill()
    report(results, args.samples, (before, os.getloadavg()[0]))
    print("\nthe broker alone (no sandbox), median ms of mint + revoke, interleaved:")
    for name, values in alone.items():
        print(f"  {name:44} {statistics.median(values) * 1000:6.1f}  "
              f"(p99 {percentile(values, 0.99) * 1000:.1f})")


if __name__ == "__main__":
    main()
