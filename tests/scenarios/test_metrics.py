"""Issue 13, metrics: after a run with an LLM call, an approval and a sandboxed action (plus a
refused webhook and a Slack 429), ``GET /metrics`` parsed with prometheus_client shows every
series with the expected labels and counts; every metric the Grafana dashboard queries exists.

The registry is the process's, shared with other tests: counts are compared before and after.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai import text, tool_call
from tests.scenarios.harness import APPROVER
from tests.scenarios.llm_harness import mention
from tests.scenarios.process import AuditFile

pytestmark = pytest.mark.docker
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "opsbot.json"
Samples = dict[tuple[str, frozenset], float]
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


async def scrape(url: str) -> tuple[Samples, set[str]]:
    """Every sample of ``GET /metrics`` by (name, labels), and every sample name the families
    can have (a labelled series that never counted yet has no sample, but exists)."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        body = await response.text()
    samples, names = {}, set()
    for family in text_string_to_metric_families(body):
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
            names.add(s.name)
    return samples, names


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much the samples of ``name`` whose labels include ``labels`` grew, summed."""
    want = set(labels.items())
    grown = 0.0
    for (sample, have), value in after.items():
        if sample == name and want <= have:
            grown += value - before.get((sample, have), 0.0)
    return grown


def value(samples: Samples, name: str, **labels: str) -> float | None:
    want = set(labels.items())
    found = [v for (s, have), v in samples.items() if s == name and want <= have]
    return sum(found) if found else None


async def test_a_run_with_an_approval_shows_in_every_series(hl, llm_api, redis_db):
    before, _ = await scrape(hl.bot.url)
    redis_db.set("cache:1", "x")
    hl.slack.rate_limit("chat.update", times=1, retry_after=1)
    llm_api.push(tool_call("redis__flushdb", {}), text("Flushed, as approved."))
    thread = await mention(hl, "flush the poisoned cache")
    card = await hl.card(thread)
    await hl.click(card, APPROVER)
    await hl.report(thread)
    async with aiohttp.ClientSession() as session:  # an unsigned webhook: refused, counted
        async with session.post(f"{hl.bot.url}/webhooks/pagerduty", data=b"{}") as response:
            assert response.status == 400
    audit = AuditFile(hl.bot.runtime.settings.data_dir)
    ran = audit.rows("sandbox.exec") + audit.rows("sandbox.preview")
    after, names = await scrape(hl.bot.url)

    run = {"source": "mention", "lane": "chat"}
    assert delta(before, after, "opsbot_runs_started_total", **run) == 1
    assert delta(before, after, "opsbot_runs_ended_total", outcome="done", **run) == 1
    assert delta(before, after, "opsbot_run_duration_seconds_count", outcome="done", **run) == 1
    assert delta(before, after, "opsbot_approvals_requested_total", tier="4") == 1
    assert delta(before, after, "opsbot_approvals_decided_total", outcome="approved") == 1
    assert delta(before, after, "opsbot_approval_decision_seconds_count", outcome="approved") == 1
    assert value(after, "opsbot_approvals_pending") == 0

    model = {"model": "gpt-4o-mini"}
    assert delta(before, after, "opsbot_llm_calls_total", outcome="ok", **model) == 2
    used = [r["data"] for r in audit.rows("llm.call")]
    assert delta(before, after, "opsbot_llm_tokens_total", type="input", **model) == sum(
        u["input_tokens"] for u in used)
    assert delta(before, after, "opsbot_llm_estimated_cost_usd_total", **model) == pytest.approx(
        sum(u["cost_usd"] for u in used))

    assert len(ran) >= 1  # the flush, and its preview when the connector has one
    assert delta(before, after, "opsbot_sandbox_runs_total", status="ok") == len(ran)
    assert delta(before, after, "opsbot_sandbox_start_seconds_count") == len(ran)
    assert delta(before, after, "opsbot_sandbox_exec_seconds_count") == len(ran)
    assert value(after, "opsbot_sandbox_pool_ready", kind="none") is not None

    assert delta(before, after, "opsbot_slack_api_calls_total", method="chat.postMessage",
                 outcome="ok") >= 3  # status message, card, report
    assert delta(before, after, "opsbot_slack_api_ratelimited_total", method="chat.update") == 1
    assert delta(before, after, "opsbot_slack_requests_total", outcome="200") >= 2
    assert delta(before, after, "opsbot_webhook_deliveries_total", source="pagerduty",
                 result="unsigned") == 1
    for lane in ("maintenance", "incident", "chat", "scheduled"):
        assert value(after, "opsbot_queue_jobs", lane=lane) == 0
        assert value(after, "opsbot_queue_oldest_job_age_seconds", lane=lane) == 0

    missing = dashboard_metrics() - names
    assert not missing, f"the dashboard queries metrics opsbot does not export: {missing}"


def dashboard_metrics() -> set[str]:
    """Every ``opsbot_*`` sample name the dashboard's queries use."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return {m for e in exprs for m in re.findall(r"\bopsbot_[a-z_]+\b", e)}
