"""Token usage and what it cost, for the audit log and the run report.

``usage`` in the run state is a flat dict of counters: the token counts LangChain reports in
``AIMessage.usage_metadata`` summed over the run's model calls, plus ``calls`` and the agent's
clock (``busy_ms``/``mark_ms``, see ``graph/agent.py``). Prices are list prices per million
tokens; unknown models show tokens only.

Usage::

    total = add_usage({}, {"input_tokens": 900, "output_tokens": 100, "total_tokens": 1000})
    describe("gpt-4o-mini", total)      # '1,000 tokens in 1 call (gpt-4o-mini, ≈ $0.0002)'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# USD per million tokens (input, output); unknown models show tokens only.
PRICES = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
}
KEYS = ("input_tokens", "output_tokens", "total_tokens")


def add_usage(total: Mapping[str, int], usage: Mapping[str, Any]) -> dict[str, int]:
    """``total`` plus one model call's ``usage_metadata``; other counters are kept."""
    summed = {k: int(total.get(k, 0)) + int(usage.get(k, 0) or 0) for k in KEYS}
    return {**total, **summed, "calls": int(total.get("calls", 0)) + 1}


def cost(model: str, usage: Mapping[str, Any]) -> float | None:
    """Estimated USD for ``usage`` at list price, or None for a model without a known price."""
    price = PRICES.get(model)
    if price is None:
        return None
    spent = usage.get("input_tokens", 0) * price[0] + usage.get("output_tokens", 0) * price[1]
    return round(spent / 1e6, 6)


def describe(model: str, usage: Mapping[str, int]) -> str:
    """``1,234 tokens in 2 calls (gpt-4o-mini, ≈ $0.0004)``; empty when no tokens were used."""
    tokens = usage.get("total_tokens", 0)
    if not tokens:
        return ""
    calls = usage.get("calls", 0)
    counted = f" in {calls} call{'s' if calls != 1 else ''}" if calls else ""
    usd = cost(model, usage)
    price = f"≈ ${usd:.4f}" if usd is not None else "price unknown"
    return f"{tokens:,} tokens{counted} ({model}, {price})"
