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
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.config import SandboxConfig
from sandbox.image import build_image
from sandbox.protocol import SandboxOutcome, SandboxRequest
from sandbox.runner import SandboxRunner
from tools.base import Endpoint, Status


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_redis(directory: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port),
                             "--bind", "127.0.0.1", "--save", "", "--dir", directory],
                            stdout=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    raise SystemExit("redis-server did not start")


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
            "burst": (burst_times, burst_outcomes), "teardown": teardown_total}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    image = build_image(log=lambda line: print(line, file=sys.stderr))
    with tempfile.TemporaryDirectory() as directory:
        proc, port = start_redis(directory)
        try:
            results = asyncio.run(measure(image, port, args.samples))
        finally:
            proc.terminate()
    report(results, args.samples)


if __name__ == "__main__":
    main()
