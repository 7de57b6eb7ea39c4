"""The Slack Bolt app: explicit wiring, nothing at import time.

``build_app`` creates the ``AsyncApp`` with a Web API client pointed at ``OPSBOT_SLACK_API_URL``
(429s retried after ``Retry-After``; ``ok: false, ratelimited`` with HTTP 200 retried
after a growing wait, ``bot/slack_retry.py``) and registers one listener module per surface. Nothing
touches the database before the ack: Slack's redeliveries are de-duplicated on ``event_id``
in the transaction that records the run (``graph/runs.py``).
"""

from __future__ import annotations

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.deps import BotDeps
from bot.listeners import register_all
from bot.metrics import CountingWebClient, RateLimitCounter
from bot.settings import Settings
from bot.slack_retry import OkFalseRateLimitRetryHandler


def slack_client(settings: Settings, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """The Web API client; pass one long-lived ``session`` so calls reuse connections."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    return CountingWebClient(
        token=token,
        base_url=settings.slack_api_url,
        session=session,
        timeout=15,
        retry_handlers=[
            RateLimitCounter(),  # counts every 429, retries nothing itself
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=8),
            OkFalseRateLimitRetryHandler(max_retry_count=8, backoff=settings.slack_backoff_s),
        ],
    )


def build_app(
    settings: Settings, deps: BotDeps, client: AsyncWebClient, incidents=None
) -> AsyncApp:
    app = AsyncApp(
        client=client,
        # HTTP requests are verified on the raw body by bot/web.py before Bolt parses them (Bolt
        # would parse first and crash on a truncated body); Socket Mode has no signatures.
        request_verification_enabled=False,
        # Listeners only ack and hand off (BotDeps.spawn), so answering after the listener
        # returns is fast; Bolt's other mode polls for the ack every 10 ms.
        process_before_response=True,
    )

    register_all(app, deps, incidents)
    return app
