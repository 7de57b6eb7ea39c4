"""Prometheus series of the sandbox and the credential broker (host side only: this module is
not part of the sandbox image).

Recorded where the work happens (the runner after each container, the broker after each mint
and revocation), so every process that runs actions exports its own; ``GET /metrics`` serves
the default registry. The pool's size is read when scraped (:class:`PoolCollector`).

Series::

    opsbot_sandbox_start_seconds{start="cold"|"warm"}   container ready to take the request
    opsbot_sandbox_exec_seconds{start="cold"|"warm"}    request in → result out
    opsbot_sandbox_runs_total{start, status}            actions run, by the result's status
    opsbot_sandbox_pool_ready{kind}                     pre-started containers waiting
    opsbot_credentials_minted_total{kind}               per secret kind (static, kv, database, ssh...)
    opsbot_credentials_revoked_total{kind}
    opsbot_credential_failures_total{operation="mint"|"revoke"}
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

SANDBOX_START = Histogram(
    "opsbot_sandbox_start_seconds",
    "Seconds until an action's container was ready for its request (warm: taken from the pool)",
    ["start"], buckets=SECONDS)
SANDBOX_EXEC = Histogram(
    "opsbot_sandbox_exec_seconds", "Seconds from an action's request to its result",
    ["start"], buckets=SECONDS)
SANDBOX_RUNS = Counter(
    "opsbot_sandbox_runs_total", "Sandboxed actions run, by container start and result status",
    ["start", "status"])
MINTED = Counter(
    "opsbot_credentials_minted_total", "Credentials issued for one action, by secret kind",
    ["kind"])
REVOKED = Counter(
    "opsbot_credentials_revoked_total", "Per-action credentials revoked, by secret kind", ["kind"])
FAILURES = Counter(
    "opsbot_credential_failures_total", "Credential mints or revocations that failed",
    ["operation"])


def sandbox_ran(pooled: bool, phases: dict[str, float], status: str) -> None:
    """One container's timings (``SandboxOutcome.phases``): everything before ``exec`` is the
    start; a warm container's start is only what was left to do (its egress)."""
    start = "warm" if pooled else "cold"
    SANDBOX_START.labels(start).observe(sum(v for k, v in phases.items() if k != "exec"))
    if "exec" in phases:
        SANDBOX_EXEC.labels(start).observe(phases["exec"])
    SANDBOX_RUNS.labels(start, status).inc()


def counted(counter: Counter, kinds: Iterable[str]) -> None:
    for kind in kinds:
        counter.labels(kind).inc()


class Pool(Protocol):
    def sizes(self) -> dict[str, int]: ...


class PoolCollector(Collector):
    """``opsbot_sandbox_pool_ready{kind}``: the live warm pools' ready containers, summed per
    kind, read at scrape time (pools register themselves; a closed one drops out)."""

    def __init__(self) -> None:
        self._pools: weakref.WeakSet[Any] = weakref.WeakSet()

    def add(self, pool: Pool) -> None:
        self._pools.add(pool)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("opsbot_sandbox_pool_ready",
                                   "Pre-started sandbox containers ready to take an action",
                                   labels=["kind"])
        totals: dict[str, int] = {"none": 0, "egress": 0}
        for pool in list(self._pools):
            for kind, ready in pool.sizes().items():
                totals[kind] = totals.get(kind, 0) + ready
        for kind, ready in sorted(totals.items()):
            family.add_metric([kind], ready)
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return self.collect()


POOLS = PoolCollector()
REGISTRY.register(POOLS)
