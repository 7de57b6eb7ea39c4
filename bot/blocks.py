"""Block Kit for run reports: pure functions, every field inside Slack's limits.

A report that would not fit (section text 3,000, ~12,000 characters of blocks in total) keeps a
shortened body in the message and the full text goes into a file in the thread.
"""

from __future__ import annotations

from typing import Any

from graph.surface import CallReport, Report, RunState

SECTION = 3000
MESSAGE_BUDGET = 11_000  # Slack rejects far fewer than 50 x 3,000 chars (msg_blocks_too_long)
CALL_OUTPUT = 1500
MARKER = "… (truncated)"
STATE_ICONS = {
    RunState.DONE: ":white_check_mark:",
    RunState.FAILED: ":x:",
    RunState.CANCELLED: ":heavy_multiplication_x:",
    RunState.INTERRUPTED: ":warning:",
}
CALL_ICONS = {"ok": "✅", "no_data": "∅", "error": "❌", "denied": "⛔", "pending": "⏳"}


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(MARKER)] + MARKER


def report_message(report: Report) -> tuple[dict[str, Any], str | None]:
    """The report as ``{"text", "blocks"}``, plus the full text when it had to be shortened."""
    full = report_text(report)
    blocks = [_section(_title(report))]
    if report.answer:
        blocks += [_section(part) for part in _split(report.answer, SECTION)]
    for call in report.calls:
        blocks.append(_section(_call(call, CALL_OUTPUT)))
    footer = _footer(report)
    if footer:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(footer, 2000)}]})
    if _size(blocks) <= MESSAGE_BUDGET and len(blocks) <= 50:
        return {"text": clip(full, 3900), "blocks": blocks}, None
    short = [_section(_title(report)),
             _section(clip(report.answer or "The full report is attached.", SECTION)),
             _section("_The full report is too long for one message; it is attached as a file._")]
    return {"text": clip(full, 3900), "blocks": short}, full


def report_text(report: Report) -> str:
    parts = [_title(report)]
    if report.answer:
        parts.append(report.answer)
    parts += [_call(c, None) for c in report.calls]
    footer = _footer(report)
    if footer:
        parts.append(footer)
    return "\n\n".join(parts)


def _title(report: Report) -> str:
    icon = STATE_ICONS.get(report.state, "")
    headline = f" — {report.headline}" if report.headline else ""
    return f"{icon} *Run `{report.run_id}` {report.state.value}*{headline}"


def _call(call: CallReport, limit: int | None) -> str:
    icon = CALL_ICONS.get(call.status, "•")
    note = f" _({call.note})_" if call.note else ""
    head = f"{icon} *{call.summary}* — {call.status}{note}"
    if call.invocation:
        head += f"\n`{call.invocation}`"
    output = call.output if limit is None else clip(call.output, limit)
    return head + (f"\n```{output}```" if output else "")


def _footer(report: Report) -> str:
    bits = []
    if report.citations:
        bits.append("Runbooks: " + ", ".join(f"{c.title} (`{c.path}`)" for c in report.citations))
    if report.usage:
        bits.append(f"LLM usage: {report.usage}")
    return " · ".join(bits)


def _split(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION)}}


def _size(blocks: list[dict[str, Any]]) -> int:
    return sum(len(b.get("text", {}).get("text", "")) for b in blocks)
