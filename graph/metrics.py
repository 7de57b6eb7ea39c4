"""Prometheus series of runs, approvals, the queue and the LLM, recorded at the few places
that decide them: the run manager (a run starts), the driver (a run ends), the desk (an
approval is asked and decided), the agent (a model call), and — read when scraped — the
queue and the approvals still pending.

Each process exports its own (``GET /metrics`` on every role): in scale-out, a run starts in
an ingress process and ends in a worker, so dashboards sum counters over processes; the
scrape-time gauges (queue, pending approvals) read the shared database and are the same in
every process, so dashboards take their ``max``.

Series::

    opsbot_runs_started_total{source, lane}
    opsbot_runs_ended_total{source, lane, outcome}
    opsbot_run_duration_seconds{source, lane, outcome}      request → final report
    opsbot_approvals_requested_total{tier}
    opsbot_approvals_decided_total{outcome}                 approved, denied, expired, cancelled
    opsbot_approval_decision_seconds{outcome}               card posted → decided
    opsbot_approvals_pending                                (scrape time)
    opsbot_queue_jobs{lane}                                 waiting jobs (scrape time)
    opsbot_queue_oldest_job_age_seconds{lane}               (scrape time)
    opsbot_llm_calls_total{model, outcome}
    opsbot_llm_tokens_total{model, type="input"|"output"}
    opsbot_llm_estimated_cost_usd_total{model}              at list price (graph/usage.py)
"""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram

from approvals.models import ApprovalRequest
from graph.task import Task

LANES = ("maintenance", "incident", "chat", "scheduled")

RUNS_STARTED = Counter("opsbot_runs_started_total", "Runs recorded and queued",
                       ["source", "lane"])
RUNS_ENDED = Counter("opsbot_runs_ended_total", "Runs that reached a final state",
                     ["source", "lane", "outcome"])
RUN_SECONDS = Histogram(
    "opsbot_run_duration_seconds", "Seconds from a run's request to its final report",
    ["source", "lane", "outcome"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 14400))
APPROVALS_REQUESTED = Counter("opsbot_approvals_requested_total",
                              "Approval cards posted, by the action's tier", ["tier"])
APPROVALS_DECIDED = Counter("opsbot_approvals_decided_total",
                            "Approval requests closed, by outcome", ["outcome"])
DECISION_SECONDS = Histogram(
    "opsbot_approval_decision_seconds", "Seconds from an approval request to its decision",
    ["outcome"], buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 86400))
APPROVALS_PENDING = Gauge("opsbot_approvals_pending", "Approval requests waiting for a decision")
QUEUE_JOBS = Gauge("opsbot_queue_jobs", "Jobs waiting for a worker, by lane", ["lane"])
QUEUE_AGE = Gauge("opsbot_queue_oldest_job_age_seconds",
                  "Age of the oldest job waiting for a worker, by lane", ["lane"])
LLM_CALLS = Counter("opsbot_llm_calls_total", "Chat model calls, by model and outcome",
                    ["model", "outcome"])
LLM_TOKENS = Counter("opsbot_llm_tokens_total", "Tokens used, by model and type",
                     ["model", "type"])
LLM_COST = Counter("opsbot_llm_estimated_cost_usd_total",
                   "Estimated LLM spend in US dollars at list price, by model", ["model"])
FEEDBACK = Counter("opsbot_feedback_total",
                   "Ratings of run reports (feedback buttons), by rating (up, down)", ["rating"])
FEEDBACK_COMMENTS = Counter("opsbot_feedback_comments_total",
                            "Comments left with a rating of a run report", ["rating"])


def run_started(task: Task, lane: str) -> None:
    RUNS_STARTED.labels(task.source.value, lane).inc()


def run_ended(task: Task, lane: str, outcome: str) -> None:
    RUNS_ENDED.labels(task.source.value, lane, outcome).inc()
    seconds = (datetime.now(UTC) - task.created_at).total_seconds()
    RUN_SECONDS.labels(task.source.value, lane, outcome).observe(max(seconds, 0.0))


def approval_decided(request: ApprovalRequest, now: datetime) -> None:
    outcome, at = request.status.value, request.decided_at or now
    APPROVALS_DECIDED.labels(outcome).inc()
    DECISION_SECONDS.labels(outcome).observe(max((at - request.created_at).total_seconds(), 0.0))


def llm_call(model: str, outcome: str, usage: dict | None = None,
             cost_usd: float | None = None) -> None:
    LLM_CALLS.labels(model, outcome).inc()
    used = usage or {}
    for kind in ("input", "output"):
        LLM_TOKENS.labels(model, kind).inc(int(used.get(f"{kind}_tokens", 0) or 0))
    if cost_usd:
        LLM_COST.labels(model).inc(cost_usd)


def queue_depth(depth: dict[str, tuple[int, float]]) -> None:
    """Set the queue gauges from ``{lane: (waiting jobs, oldest age in seconds)}``; lanes not
    mentioned are empty."""
    for lane in LANES:
        jobs, age = depth.get(lane, (0, 0.0))
        QUEUE_JOBS.labels(lane).set(jobs)
        QUEUE_AGE.labels(lane).set(age)
