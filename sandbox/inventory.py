"""Keeping a host-side listing current for policy: fetch, compare, hand over on change.

The Docker connector's containers (``sandbox/docker_inventory.py``) and the AWS connector's EC2
instances (``sandbox/aws_inventory.py``) are listed on the host so that policy, which is pure,
can match their labels or tags. Both refresh the same way: :func:`watch`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger("opsbot.inventory")


async def watch(fetch: Callable[[], Awaitable[Any]],
                changed: Callable[[Any], Awaitable[None] | None], interval: float, event: str,
                errors: tuple[type[BaseException], ...], why: Callable[[BaseException], str],
                last: Any = None) -> None:
    """Forever: ``fetch()``, and call ``changed`` with what it returned when that differs from
    ``last``; then wait ``interval``. A failing fetch keeps the last list and is logged as
    ``event`` once per outage, not at every try."""
    failing = False
    while True:
        try:
            current = await fetch()
        except errors as e:
            if not failing:
                log.warning(event, error=why(e))
            failing = True
        else:
            failing = False
            if current != last:
                result = changed(current)
                if result is not None:
                    await result
                last = current
        await asyncio.sleep(interval)
