"""`/ops help`: generated from the registered toolsets, so it can never drift from the code."""

from __future__ import annotations

from typing import Any

from tools.base import Action, Toolset
from tools.catalog import Catalog

HEADER = (
    "*opsbot* runs typed commands without an LLM:\n"
    "• `/ops help [toolset]` — this list\n"
    "• `/ops runs` — active runs in this channel\n"
    "• `/ops schedules` — the schedules, their last result and next run\n"
    "• `/ops cancel <run-id>` — cancel a run and expire its approvals\n"
    "• `/ops <toolset> <action> [value …] [key=value …]` — run one action"
)


def help_text(catalog: Catalog, toolset: str | None = None) -> str:
    toolsets = catalog.enabled()
    if toolset is not None:
        chosen = [t for t in toolsets if t.name == toolset]
        if not chosen:
            names = ", ".join(f"`{t.name}`" for t in toolsets)
            return f"No toolset `{toolset}`. Available: {names}."
        return _toolset(chosen[0], True, catalog.unavailable.get(toolset, ""))
    return "\n\n".join([HEADER, *(_toolset(t, False, catalog.unavailable.get(t.name, ""))
                                   for t in toolsets)])


def command_examples(catalog: Catalog, limit: int = 8) -> list[str]:
    """Short usage lines for the read-only actions, shown when free text can't be answered."""
    lines = [
        f"`/ops {usage(t, a)}`"
        for t in catalog.enabled()
        if t.name not in catalog.unavailable
        for a in t.actions
        if a.tier == 0
    ]
    return lines[:limit]


def usage(toolset: Toolset[Any], action: Action[Any]) -> str:
    fields = action.params.model_fields
    required = [f"<{n}>" for n, f in fields.items() if f.is_required()]
    optional = [f"[{n}=…]" for n, f in fields.items() if not f.is_required()]
    return " ".join([toolset.name, action.name, *required, *optional])


def _toolset(toolset: Toolset[Any], detailed: bool, unavailable: str = "") -> str:
    state = f" _Unavailable: {unavailable}_" if unavailable else ""
    lines = [f"*{toolset.name}* — {toolset.description}{state}"]
    for action in toolset.actions:
        tier = f"tier {action.tier.label}"
        lines.append(f"• `{usage(toolset, action)}` — {_first_sentence(action.description)} ({tier})")
        if detailed:
            lines.extend(_params(action))
    return "\n".join(lines)


def _params(action: Action[Any]) -> list[str]:
    out = []
    for name, field in action.params.model_fields.items():
        default = "" if field.is_required() else f" (default {field.default!r})"
        out.append(f"    ◦ `{name}`: {field.description or ''}{default}")
    return out


def _first_sentence(text: str) -> str:
    return text.split(". ")[0].rstrip(".") + "."
