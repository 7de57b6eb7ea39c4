"""Per-token rate limit of the task API: a token bucket per token, in this process.

``rate`` requests per minute, bursts up to ``rate``. A request over the limit gets 429 with
``Retry-After`` (whole seconds until a request would pass). Each process keeps its own buckets:
behind N ingress processes a token may make up to N × ``rate`` requests a minute.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimit:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.capacity = float(per_minute)
        self.refill = per_minute / 60.0  # tokens per second
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    def wait(self, key: str) -> int:
        """0 and one request counted, or the seconds to wait before the next one passes."""
        now = self.clock()
        tokens, then = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.refill)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.refill))
