"""Sandbox latency: ``runner.run(redis info)`` against bare ``docker run --rm <image> true``.

Run as root on a machine with Docker and redis-server (the image is built if missing)::

    .venv/bin/python bench/sandbox_bench.py [--samples 30]

Every row is measured in the same run as the baseline, and reported as a ratio of its p50 to
the baseline's p50. Targets (from the sandbox issue): cold <= 1.5x, warm pool <= 0.5x.

Rows:
  * bare docker run: the docker CLI, ``docker run --rm <image> true`` (no hardening, no I/O);
  * cold: ``warm_pool=0``; every run creates its network, container, forwarder and rules;
  * warm: ``warm_pool=2``, the pool given time to refill between runs (a chat bot's pace);
  * warm back-to-back: no pause, so refills compete with runs for the CPU and the pool can
    run dry (then the run goes cold).

Firewall (``--firewall-rounds``, root only): the iptables work of one egress run (confine the
bridge, admit a forwarder port, release) on a made-up bridge name, measured as wall time, CPU
time of the event-loop thread, and the longest stall of a 1 ms heartbeat on the loop (how long
nothing else could run). ``--firewall-only`` skips the container rows.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.config import SandboxConfig
from sandbox.firewall import Firewall
from sandbox.image import build_image
from sandbox.protocol import SandboxOutcome, SandboxRequest
from sandbox.runner import SandboxRunner
from tests.services.redis import start_redis
from tools.base import Endpoint, Status


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bare_docker_run(image: str) -> float:
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec("docker", "run", "--rm", image, "true")
    if await proc.wait() != 0:
        raise SystemExit("docker run failed")
    return time.perf_counter() - began


def request(port: int, n: int) -> SandboxRequest:
    return SandboxRequest(run_id="bench", call_id=f"bench-{n}", toolset="redis", action="info",
                          config={"url": f"redis://127.0.0.1:{port}/0"},
                          egress=[Endpoint(host="127.0.0.1", port=port)])


async def timed_runs(runner: SandboxRunner, port: int, samples: int,
                     between: Callable[[], Awaitable[None]]) -> tuple[list[float],
                                                                      list[SandboxOutcome]]:
    times, outcomes = [], []
    for n in range(samples):
        await between()
        began = time.perf_counter()
        outcome = await runner.run(request(port, n))
        times.append(time.perf_counter() - began)
        if outcome.result.status is not Status.OK:
            raise SystemExit(f"run failed: {outcome.result.error}")
        outcomes.append(outcome)
    return times, outcomes


async def nothing() -> None:
    return None


async def measure(image: str, port: int, samples: int) -> dict[str, object]:
    bare = [await bare_docker_run(image) for _ in range(samples)]
    cold = await SandboxRunner.start(SandboxConfig(instance="bench-cold", image=image,
                                                   warm_pool=0))
    with LoopLag() as cold_lag:
        cold_times, cold_outcomes = await timed_runs(cold, port, samples, cold.settle)
    settle_began = time.perf_counter()
    await cold.run(request(port, -1))
    await cold.settle()
    teardown_total = time.perf_counter() - settle_began
    await cold.close()
    warm = await SandboxRunner.start(SandboxConfig(instance="bench-warm", image=image,
                                                   warm_pool=2))

    async def refilled() -> None:
        await warm.settle()
        await warm.pool.wait_ready()

    warm_times, warm_outcomes = await timed_runs(warm, port, samples, refilled)
    burst_times, burst_outcomes = await timed_runs(warm, port, samples, nothing)
    await warm.close()
    return {"bare": bare, "cold": (cold_times, cold_outcomes), "warm": (warm_times, warm_outcomes),
            "burst": (burst_times, burst_outcomes), "teardown": teardown_total,
            "cold_lag": cold_lag.lags}


class LoopLag:
    """How late a 1 ms sleep wakes up: time the loop spent unable to run anything else."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await asyncio.sleep(0.001)
            self.lags.append(loop.time() - began - 0.001)

    def __enter__(self) -> Self:
        self._task = asyncio.ensure_future(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def firewall_round(firewall: Firewall, n: int) -> None:
    bridge, gateway = f"obbench{n % 1000:03d}", "198.18.255.1"
    await firewall.confine(bridge, gateway, [])
    await firewall.allow(bridge, gateway, [40000 + n % 1000])
    await firewall.release(bridge)


async def measure_firewall(rounds: int) -> dict[str, list[float]]:
    firewall = Firewall("bench-fw")
    if not await firewall.start():
        raise SystemExit("the firewall bench needs root and iptables")
    wall, cpu = [], []
    try:
        for n in range(rounds):
            began, began_cpu = time.perf_counter(), time.thread_time()
            await firewall_round(firewall, n)
            cpu.append(time.thread_time() - began_cpu)
            wall.append(time.perf_counter() - began)
        with LoopLag() as lag:
            for n in range(rounds):
                await firewall_round(firewall, n)
    finally:
        await firewall.close()
    return {"wall": wall, "cpu": cpu, "lag": lag.lags}


def report_firewall(results: dict[str, list[float]], rounds: int) -> None:
    print(f"\nfirewall work of one egress run, {rounds} rounds (confine, allow, release):")
    for name, key in (("wall time per round", "wall"), ("event-loop thread CPU per round", "cpu"),
                      ("heartbeat lateness (loop stall)", "lag")):
        values = results[key]
        print(f"  {name:34} p50 {statistics.median(values) * 1000:7.2f} ms  "
              f"p99 {percentile(values, 0.99) * 1000:7.2f} ms  max {max(values) * 1000:7.2f} ms")


def report(results: dict, samples: int) -> None:
    bare = results["bare"]
    base = statistics.median(bare)
    rows = [("bare docker run --rm <image> true", bare, None)]
    rows += [("runner.run(redis info) cold", *results["cold"])]
    rows += [("runner.run(redis info) warm pool", *results["warm"])]
    rows += [("runner.run(redis info) warm, back-to-back", *results["burst"])]
    print(f"\nsamples per row: {samples}; ratio = row p50 / bare p50\n")
    print(f"{'':44} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>7} {'pooled':>7}")
    for name, times, outcomes in rows:
        pooled = f"{sum(o.pooled for o in outcomes)}/{len(outcomes)}" if outcomes else ""
        p50 = statistics.median(times)
        print(f"{name:44} {p50 * 1000:8.1f} {percentile(times, 0.99) * 1000:8.1f} "
              f"{p50 / base:6.2f}x {pooled:>7}")
    print("\ncold run phases, median ms:")
    phases: dict[str, list[float]] = {}
    for outcome in results["cold"][1]:
        for phase, seconds in outcome.phases.items():
            phases.setdefault(phase, []).append(seconds)
    print("  " + "  ".join(f"{k} {statistics.median(v) * 1000:.1f}" for k, v in phases.items()))
    print(f"  then, off the critical path: run + removal of container and network "
          f"{results['teardown'] * 1000:.0f} ms")
    lags = results["cold_lag"]
    print(f"  1 ms heartbeat lateness during the cold rows (loop stalls): p99 "
          f"{percentile(lags, 0.99) * 1000:.2f} ms, max {max(lags) * 1000:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--firewall-rounds", type=int, default=100)
    parser.add_argument("--firewall-only", action="store_true")
    args = parser.parse_args()
    if args.firewall_rounds:
        report_firewall(asyncio.run(measure_firewall(args.firewall_rounds)), args.firewall_rounds)
    if args.firewall_only:
        return
    image = build_image(log=lambda line: print(line, file=sys.stderr))
    with tempfile.TemporaryDirectory() as directory:
        proc, server = start_redis(directory)
        try:
            results = asyncio.run(measure(image, server.port, args.samples))
        finally:
            proc.terminate()
    report(results, args.samples)


if __name__ == "__main__":
    main()
