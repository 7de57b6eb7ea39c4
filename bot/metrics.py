"""Prometheus metrics served at ``GET /metrics``: the front door's series (Slack requests and
Web API calls, webhooks), plus what is read when scraped.

The other packages record their own series where the work happens (``graph/metrics.py``:
runs, approvals, queue, LLM; ``sandbox/metrics.py``: containers, pool, credentials); all
of them live in prometheus_client's default registry, which ``GET /metrics`` serves. Every
process serves its own (ingress and worker roles alike).

Slack Web API calls are counted by :class:`CountingWebClient` (every method goes through
``api_call``) and 429s by :class:`RateLimitCounter`, a retry handler placed first that never
retries itself, so it sees every 429, including those the next handler retries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.slack_retry import ratelimited_with_200
from graph import metrics as graph_metrics

log = structlog.get_logger("opsbot.metrics")

SLACK_REQUESTS = Counter(
    "opsbot_slack_requests_total", "Slack HTTP requests by outcome", ["outcome"]
)
ACK_SECONDS = Histogram(
    "opsbot_slack_ack_seconds", "Time from request to Slack ack",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 3),
)
WEBHOOKS = Counter(
    "opsbot_webhook_deliveries_total", "Webhook deliveries by source and result",
    ["source", "result"])
SLACK_API_CALLS = Counter(
    "opsbot_slack_api_calls_total", "Slack Web API calls by method and outcome (ok, error, failed)",
    ["method", "outcome"])
SLACK_API_ERRORS = Counter(
    "opsbot_slack_api_errors_total", "Slack Web API calls answered with an error, by error code",
    ["method", "error"])
SLACK_RATELIMITED = Counter(
    "opsbot_slack_api_ratelimited_total",
    "Rate-limit answers from the Slack Web API (HTTP 429, or ok:false ratelimited), by method",
    ["method"])


def webhook(source: str, result: str) -> None:
    WEBHOOKS.labels(source, result).inc()


class CountingWebClient(AsyncWebClient):
    """The Slack Web API client, counting each call's outcome."""

    async def api_call(self, api_method: str, **kwargs: Any) -> AsyncSlackResponse:
        try:
            response = await super().api_call(api_method, **kwargs)
        except SlackApiError as e:
            SLACK_API_CALLS.labels(api_method, "error").inc()
            SLACK_API_ERRORS.labels(api_method, str(e.response.get("error") or "unknown")).inc()
            raise
        except Exception:
            SLACK_API_CALLS.labels(api_method, "failed").inc()  # no answer (network, timeout)
            raise
        SLACK_API_CALLS.labels(api_method, "ok").inc()
        return response


class RateLimitCounter(AsyncRetryHandler):
    """Counts rate-limit answers; never asks for a retry itself (the handler after it does)."""

    def __init__(self) -> None:
        super().__init__(max_retry_count=1_000_000)

    async def _can_retry_async(self, *, state, request, response=None, error=None) -> bool:
        if response is not None and (response.status_code == 429 or ratelimited_with_200(response)):
            SLACK_RATELIMITED.labels(request.url.rstrip("/").rsplit("/", 1)[-1]).inc()
        return False


Refresh = Callable[[], Awaitable[None]]


def scrape_time(queue: Any, records: Any) -> Refresh:
    """The gauges read from the queue and the records just before each scrape."""

    async def refresh() -> None:
        try:
            graph_metrics.queue_depth(await queue.depth())
            graph_metrics.APPROVALS_PENDING.set(len(await records.approvals.pending()))
        except Exception:  # noqa: BLE001 - a scrape still answers with what it has
            log.warning("metrics.refresh_failed", exc_info=True)

    return refresh
