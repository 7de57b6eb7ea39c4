"""Slack's other rate limit answer: ``{"ok": false, "error": "ratelimited"}`` with HTTP 200.

Bursts of ``chat.update`` (and the streaming methods) are sometimes refused that way instead of
with a 429, and without ``Retry-After``. slack_sdk's ``AsyncRateLimitErrorRetryHandler`` looks
only at the status code, so without this handler such a call fails and the text it carried is
lost. A refused call changed nothing, so trying it again is safe; the wait grows with each
attempt (``backoff`` × attempt, plus jitter) since Slack says nothing about how long.

Usage (``bot/app.py``)::

    AsyncWebClient(..., retry_handlers=[..., OkFalseRateLimitRetryHandler(max_retry_count=8)])
"""

from __future__ import annotations

import asyncio
import random

from slack_sdk.http_retry.async_handler import AsyncRetryHandler

RATELIMITED = "ratelimited"


def ratelimited_with_200(response) -> bool:
    body = response.body if response is not None else None
    return (response is not None and response.status_code == 200 and isinstance(body, dict)
            and body.get("ok") is False and body.get("error") == RATELIMITED)


class OkFalseRateLimitRetryHandler(AsyncRetryHandler):
    """Retries a call Slack refused with HTTP 200 ``ratelimited``."""

    def __init__(self, max_retry_count: int = 8, backoff: float = 1.0):
        super().__init__(max_retry_count=max_retry_count)
        self.backoff = backoff

    async def _can_retry_async(self, *, state, request, response=None, error=None) -> bool:
        return ratelimited_with_200(response)

    async def prepare_for_next_attempt_async(self, *, state, request, response=None,
                                             error=None) -> None:
        state.next_attempt_requested = True
        await asyncio.sleep(self.backoff * (state.current_attempt + 1) * (1 + random.random() / 4))
        state.increment_current_attempt()
