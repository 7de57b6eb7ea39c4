"""Prometheus metrics served at ``GET /metrics``."""

from prometheus_client import Counter, Histogram

SLACK_REQUESTS = Counter(
    "opsbot_slack_requests_total", "Slack HTTP requests by outcome", ["outcome"]
)
ACK_SECONDS = Histogram(
    "opsbot_slack_ack_seconds", "Time from request to Slack ack",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 3),
)
PAGERDUTY_EVENTS = Counter(
    "opsbot_pagerduty_events_total", "PagerDuty webhook deliveries by outcome", ["outcome"]
)
