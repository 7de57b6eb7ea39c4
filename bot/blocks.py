"""Block Kit for run reports: pure functions, every field inside Slack's limits.

A report is a title, the answer (split into 3,000-character sections), one section per tool
call with its output, and a footer naming the cited runbooks and the LLM usage. When anything
had to be shortened to fit (a call's output past ``CALL_OUTPUT``, or the whole message past
``MESSAGE_BUDGET`` characters or 50 blocks) the message says so and the full text is returned
too, for the caller to attach as a file in the thread (``files.uploadV2``).

Tool output and the model's answer are untrusted text: ``&``, ``<`` and ``>`` are escaped, so
an output containing ``<!channel>`` or a crafted link shows as text instead of pinging anyone;
tool output sits in a code block it cannot close, and a call's summary stays on its line
(``approvals/mrkdwn.py``).

Usage::

    message, full = report_message(report)
    await client.chat_postMessage(channel=c, thread_ts=t, **message)
    if full is not None:
        await client.files_upload_v2(channel=c, thread_ts=t, content=full, filename="report.md")
"""

from __future__ import annotations

from typing import Any

from approvals.mrkdwn import code, code_block, escape, one_line, truncate
from graph.surface import CallReport, CheckReport, Report, RunState

SECTION = 3000  # section text
MAX_BLOCKS = 50 - 2  # Slack's limit, less the feedback buttons and "Save as runbook"
SAVE_RUNBOOK_ACTION = "save_runbook"
FEEDBACK_ACTION = "run_feedback"
FEEDBACK_BLOCK = "feedback"
FEEDBACK_VIEW = "run_feedback_comment"
FEEDBACK_COMMENT = "comment"
MESSAGE_BUDGET = 11_000  # Slack refuses far less than 50 x 3,000 characters (msg_blocks_too_long)
CALL_OUTPUT = 1500
FOOTER = 2000  # context element text
TEXT = 3900  # the notification / fallback ``text``
ATTACHED = "_Shortened to fit in Slack: the full report is attached as a file below._"
STATE_ICONS = {
    RunState.DONE: ":white_check_mark:",
    RunState.FAILED: ":x:",
    RunState.CANCELLED: ":heavy_multiplication_x:",
    RunState.INTERRUPTED: ":warning:",
}
CHECK_ICONS = {True: "🟢", False: "🔴", None: "⚪"}
CALL_ICONS = {"ok": "✅", "no_data": "∅", "error": "❌", "denied": "⛔", "pending": "⏳"}


def report_message(report: Report) -> tuple[dict[str, Any], str | None]:
    """The report as ``{"text", "blocks"}`` (its feedback buttons last), plus the full text
    when something was shortened."""
    message, full = _report_message(report)
    if report.draftable:
        message["blocks"].append(save_runbook_block(report.run_id))
    message["blocks"].append(feedback_block(report.run_id))
    return message, full


def save_runbook_block(run_id: str) -> dict[str, Any]:
    return {"type": "actions", "block_id": SAVE_RUNBOOK_ACTION, "elements": [{
        "type": "button", "action_id": SAVE_RUNBOOK_ACTION, "value": run_id,
        "text": {"type": "plain_text", "text": "Save as runbook"}}]}


def feedback_block(run_id: str) -> dict[str, Any]:
    """👍 / 👎 on a report (Slack's ``feedback_buttons``); each value names the run."""
    def button(rating: str, text: str, label: str) -> dict[str, Any]:
        return {"text": {"type": "plain_text", "text": text}, "value": f"{rating}:{run_id}",
                "accessibility_label": label}
    return {"type": "context_actions", "block_id": FEEDBACK_BLOCK, "elements": [{
        "type": "feedback_buttons", "action_id": FEEDBACK_ACTION,
        "positive_button": button("up", "Helpful", "This answer helped"),
        "negative_button": button("down", "Not helpful", "This answer did not help")}]}


def feedback_view(run_id: str, channel: str) -> dict[str, Any]:
    """The modal after a 👎: what was wrong (optional), joined to the rating."""
    return {
        "type": "modal", "callback_id": FEEDBACK_VIEW,
        "private_metadata": f"{run_id} {channel}",
        "title": {"type": "plain_text", "text": "What went wrong?"},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Skip"},
        "blocks": [
            _section(f"Your 👎 on run `{run_id}` is recorded. A sentence on what was wrong "
                     "helps whoever improves opsbot's runbooks and prompts."),
            {"type": "input", "block_id": FEEDBACK_COMMENT, "optional": True,
             "label": {"type": "plain_text", "text": "Comment"},
             "element": {"type": "plain_text_input", "action_id": FEEDBACK_COMMENT,
                         "multiline": True, "max_length": 2000}},
        ],
    }


def _report_message(report: Report) -> tuple[dict[str, Any], str | None]:
    full = report_text(report)
    for limit in (CALL_OUTPUT, 0):
        blocks = _blocks(report, limit)
        if _fits(blocks):
            shortened = any(len(c.output) > limit for c in report.calls)
            if not shortened:
                return {"text": truncate(full, TEXT), "blocks": blocks}, None
            return {"text": truncate(full, TEXT), "blocks": _with_note(blocks)}, full
    return {"text": truncate(full, TEXT), "blocks": _minimal(report)}, full


def report_text(report: Report) -> str:
    """The whole report as mrkdwn text, nothing shortened (the file attachment's content)."""
    parts = [_title(report)]
    if report.answer:
        parts.append(escape(report.answer))
    parts += [_call(c, None) for c in report.calls]
    footer = _footer(report)
    if footer:
        parts.append(footer)
    return "\n\n".join(parts)


def _blocks(report: Report, output_limit: int) -> list[dict[str, Any]]:
    blocks = [_section(_title(report))]
    if report.answer:
        blocks += [_section(part) for part in split(escape(report.answer), SECTION)]
    blocks += [_section(_call(call, output_limit)) for call in report.calls]
    footer = _footer(report)
    if footer:
        blocks.append(_context(footer))
    return blocks


def _minimal(report: Report) -> list[dict[str, Any]]:
    """Title, as much of the answer as fits, one line per call: for huge answers."""
    lines = "\n".join(_call(c, 0) for c in report.calls)
    room = MESSAGE_BUDGET - len(_title(report)) - len(ATTACHED) - min(len(lines), SECTION)
    answer = truncate(escape(report.answer), max(room, 200)) if report.answer else ""
    blocks = [_section(_title(report))]
    blocks += [_section(part) for part in split(answer, SECTION)][: MAX_BLOCKS - 4]
    if lines:
        blocks.append(_section(lines))
    return _with_note(blocks)


def _with_note(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [*blocks[: MAX_BLOCKS - 1], _section(ATTACHED)]


def _fits(blocks: list[dict[str, Any]]) -> bool:
    # one block and the note's length are kept free for ATTACHED
    return len(blocks) < MAX_BLOCKS and _size(blocks) + len(ATTACHED) <= MESSAGE_BUDGET


def _title(report: Report) -> str:
    icon = STATE_ICONS.get(report.state, "")
    headline = f" — {report.headline}" if report.headline else ""
    return truncate(f"{icon} *Run `{report.run_id}` {report.state.value}*{headline}", SECTION)


def _call(call: CallReport, limit: int | None) -> str:
    """One call: summary, status, note, invocation and (up to ``limit``) its output."""
    icon = CALL_ICONS.get(call.status, "•")
    note = f" _({call.note})_" if call.note else ""
    head = f"{icon} *{one_line(call.summary)}* — {call.status}{note}"
    if call.invocation and limit != 0:
        head += f"\n{code(call.invocation)}"
    output = call.output if limit is None else truncate(call.output, limit) if limit else ""
    return head + (f"\n{code_block(output)}" if output else "") + _check(call.check, limit)


def _check(check: CheckReport | None, limit: int | None) -> str:
    """Whether the change held: the verdict, what "fixed" means, and the check's output."""
    if check is None:
        return ""
    icon = CHECK_ICONS[check.held]
    why = f" — {one_line(check.note)}" if check.note else ""
    line = f"\n{icon} *Check after acting: {check.verdict}* ({escape(check.expect)}){why}"
    if check.evidence and limit != 0:
        line += f"\n{code(check.invocation)}\n{code_block(truncate(check.evidence, 500))}"
    return line


def _footer(report: Report) -> str:
    bits = []
    if report.citations:
        bits.append("Runbooks: " + ", ".join(f"{escape(c.title)} (`{escape(c.path)}`)"
                                             for c in report.citations))
    if report.similar:
        bits.append("Similar: " + "; ".join(one_line(s) for s in report.similar))
    if report.usage:
        bits.append(f"LLM usage: {report.usage}")
    return " · ".join(bits)


def split(text: str, size: int) -> list[str]:
    """Pieces of at most ``size`` characters, cut at a line break when there is one."""
    parts = []
    while len(text) > size:
        cut = text.rfind("\n", size // 2, size)
        if cut <= 0:
            cut = size
            entity = text.rfind("&", cut - 5, cut)  # don't cut an escape like &amp; in two
            cut = entity if entity > 0 and ";" not in text[entity:cut] else cut
        parts.append(text[:cut])
        text = text[cut:].lstrip("\n")
    return [*parts, text] if text or not parts else parts


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, SECTION)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(text, FOOTER)}]}


def _size(blocks: list[dict[str, Any]]) -> int:
    total = 0
    for block in blocks:
        total += len(block.get("text", {}).get("text", ""))
        total += sum(len(e.get("text", "")) for e in block.get("elements", []))
    return total
