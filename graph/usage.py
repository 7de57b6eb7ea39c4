"""Token usage and what it cost, for the run report."""

from __future__ import annotations

from typing import Any

# USD per million tokens (input, output); unknown models show tokens only.
PRICES = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
}
KEYS = ("input_tokens", "output_tokens", "total_tokens")


def add_usage(total: dict[str, int], usage: dict[str, Any]) -> dict[str, int]:
    return {k: int(total.get(k, 0)) + int(usage.get(k, 0) or 0) for k in KEYS}


def describe(model: str, usage: dict[str, int]) -> str:
    """``1,234 tokens (gpt-4o-mini, ≈ $0.0004)``; empty when no tokens were used."""
    tokens = usage.get("total_tokens", 0)
    if not tokens:
        return ""
    price = PRICES.get(model)
    if price is None:
        return f"{tokens:,} tokens ({model}; price unknown)"
    usd = (usage.get("input_tokens", 0) * price[0] + usage.get("output_tokens", 0) * price[1]) / 1e6
    return f"{tokens:,} tokens ({model}, ≈ ${usd:.4f})"
