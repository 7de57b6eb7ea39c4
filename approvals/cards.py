"""Block Kit for approval cards: pure functions of an :class:`ApprovalRequest`.

An approver must be able to see the *whole* action an approval runs. The card therefore shows
the action's summary, target and every parameter in full (untrusted text in code formatting,
:mod:`approvals.mrkdwn`), or — when that does not fit Block Kit's limits (section text 3,000,
50 blocks, ~12,000 characters a message) — says so and names the file that holds the complete
canonical action: :func:`attachment` returns that file's content, and the surface posts it in
the thread before the card. Nothing on the action's path is ever cut with a "…". Only text
that is not the action (the reason, a preview's tail) may be shortened, with a marker, and the
preview is then in the file too.

Usage::

    file = attachment(request)           # None when the card shows everything
    if file:
        upload(attachment_name(request), file)
    message = approval_card(request)     # {"text": ..., "blocks": [...]}
    client.chat_postMessage(channel=..., thread_ts=..., **message)
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from approvals.models import ApprovalRequest, ApprovalStatus
from approvals.mrkdwn import code, code_block, escape, json_text, one_line, truncate

__all__ = ["APPROVE_ACTION", "DENY_ACTION", "DENY_VIEW", "approval_card", "attachment",
           "attachment_name", "button_value", "deny_reason_view", "escape",
           "parse_button_value", "truncate"]

APPROVE_ACTION = "opsbot_approve"
DENY_ACTION = "opsbot_deny"
DENY_VIEW = "opsbot_deny_reason"
SECTION_LIMIT = 3000
SUMMARY_LIMIT = 1000  # a longer summary or target is replaced by a pointer to the file
PARAMS_CHUNK = 2900  # the params JSON of one section (plus its code fence)
PARAMS_BUDGET = 5800  # at most two sections of params; more goes into the file
PREVIEW_LIMIT = 2800
CONFIRM_LIMIT = 300
TIER_NAMES = {0: "observe", 1: "recommend", 2: "draft", 3: "sandbox-execute", 4: "production"}
OUTCOME_ICONS = {
    ApprovalStatus.APPROVED: ":white_check_mark:",
    ApprovalStatus.DENIED: ":no_entry:",
    ApprovalStatus.EXPIRED: ":hourglass:",
    ApprovalStatus.CANCELLED: ":heavy_multiplication_x:",
}


def button_value(request: ApprovalRequest) -> str:
    """What a button carries: the approval id and the action hash it was shown for."""
    return json.dumps({"approval": request.id, "hash": request.action_hash})


def parse_button_value(value: str) -> tuple[str, str] | None:
    try:
        data = json.loads(value)
        return str(data["approval"]), str(data["hash"])
    except (ValueError, KeyError, TypeError):
        return None


def approval_card(request: ApprovalRequest) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        _section(f"*Approval needed:* {_summary(request)}"),
        _fields(request),
        _section(truncate(f"*Why:* {one_line(request.reason)}", SECTION_LIMIT)),
    ]
    if request.preview:
        blocks.append(_preview(request.preview))
    blocks += _action(request)
    if request.status is ApprovalStatus.PENDING:
        blocks.append(_buttons(request))
    else:
        blocks.append(_outcome(request))
    return {"text": _fallback(request), "blocks": blocks}


def attachment(request: ApprovalRequest) -> str | None:
    """The complete action (and full preview) as JSON when the card cannot show all of it."""
    if not _needs_file(request):
        return None
    return json.dumps({
        "approval": request.id, "hash": request.action_hash, "action": request.canonical,
        "summary": request.summary, "preview": request.preview,
    }, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def attachment_name(request: ApprovalRequest) -> str:
    return f"opsbot-{request.id}-action.json"


def deny_reason_view(request: ApprovalRequest) -> dict[str, Any]:
    """The modal a denier fills in (optional reason fed back to the run)."""
    return {
        "type": "modal",
        "callback_id": DENY_VIEW,
        "private_metadata": button_value(request),
        "title": {"type": "plain_text", "text": "Deny action"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            _section(f"Deny: {_summary(request)}"),
            {
                "type": "input",
                "block_id": "reason",
                "optional": True,
                "label": {"type": "plain_text", "text": "Reason (shown to the requester)"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "reason",
                    "multiline": True,
                    "max_length": 500,
                },
            },
        ],
    }


# what fits ---------------------------------------------------------------------------------


def _params_json(request: ApprovalRequest) -> str:
    return json_text(request.canonical.get("params", {}))


def _fits(text: str) -> bool:
    return len(code(text)) <= SUMMARY_LIMIT


def _params_fit(request: ApprovalRequest) -> bool:
    return len(escape(_params_json(request))) <= PARAMS_BUDGET


def _preview_fits(request: ApprovalRequest) -> bool:
    return len(code_block(request.preview or "")) <= PREVIEW_LIMIT


def _needs_file(request: ApprovalRequest) -> bool:
    shown = _fits(request.summary) and _fits(request.target) and _params_fit(request)
    return not (shown and _preview_fits(request))


# blocks --------------------------------------------------------------------------------------


def _ref(request: ApprovalRequest) -> str:
    canonical = request.canonical
    return code(f"{canonical.get('toolset', '?')} {canonical.get('action', '?')}")


def _summary(request: ApprovalRequest) -> str:
    if _fits(request.summary):
        return code(request.summary)
    return f"{_ref(request)} (its summary is too long for a card: see the attached file)"


def _target(request: ApprovalRequest) -> str:
    if _fits(request.target):
        return code(request.target)
    return "too long for a card: see the attached file"


def _fallback(request: ApprovalRequest) -> str:
    state = "needs approval" if request.status is ApprovalStatus.PENDING else request.status.value
    text = f"Approval: {_ref(request)} on {_target(request)} {state}"
    return text if len(text) <= CONFIRM_LIMIT else f"Approval: {_ref(request)} {state}"


def _fields(request: ApprovalRequest) -> dict[str, Any]:
    rule = request.rule
    got = len(request.approvals)
    items = [
        f"*Target*\n{_target(request)}",
        f"*Tier*\n{request.tier} {TIER_NAMES.get(request.tier, '')}",
        f"*Requested by*\n<@{request.requester}>",
        f"*Who may approve*\n{rule.describe()}",
        f"*Approvals*\n{got} of {rule.required}",
        f"*Expires*\n{_when(request.expires_at)}",
    ]
    return {"type": "section", "fields": [_mrkdwn(truncate(i, 2000)) for i in items]}


def _preview(preview: str) -> dict[str, Any]:
    if len(code_block(preview)) <= PREVIEW_LIMIT:
        return _section(f"*Preview*\n{code_block(preview)}")
    shown = preview[: PREVIEW_LIMIT // 2]
    while len(code_block(shown)) > PREVIEW_LIMIT // 2:
        shown = shown[: len(shown) // 2]
    note = f"_{len(preview) - len(shown):,} more characters: the full preview is in the file._"
    return _section(f"*Preview* (the beginning)\n{code_block(shown)}\n{note}")


def _action(request: ApprovalRequest) -> list[dict[str, Any]]:
    """Every parameter of the action, in full; or where the complete action is."""
    head = (f"*Action* {_ref(request)} · rule {code(request.policy_rule)} · "
            f"id {code(request.id)} · hash {code(request.action_hash[:12])}")
    if not _params_fit(request):
        return [_section(
            f"{head}\n_Its parameters are {len(_params_json(request)):,} characters, too many "
            f"for a card: the complete action is in the file {code(attachment_name(request))} "
            "in this thread. Read it before approving; the buttons approve exactly that "
            "action._")]
    chunks = _chunks(_params_json(request), PARAMS_CHUNK)
    blocks = [_section(f"{head}\n```{chunks[0]}```")]
    return blocks + [_section(f"```{chunk}```") for chunk in chunks[1:]]


def _chunks(text: str, size: int) -> list[str]:
    """``text`` escaped, in pieces of at most ``size`` characters, split at line ends where
    possible and never inside an ``&amp;``-style escape."""
    pieces, current = [], ""
    for line in text.splitlines(keepends=True):
        shown = escape(line)
        if len(current) + len(shown) > size and current:
            pieces.append(current)
            current = ""
        if len(shown) <= size:
            current += shown
            continue
        for char in line:
            if len(current) + len(escape(char)) > size:
                pieces.append(current)
                current = ""
            current += escape(char)
    return [*pieces, current]


def _buttons(request: ApprovalRequest) -> dict[str, Any]:
    approve: dict[str, Any] = {
        "type": "button",
        "action_id": APPROVE_ACTION,
        "style": "primary",
        "text": {"type": "plain_text", "text": "Approve"},
        "value": button_value(request),
    }
    if request.tier >= 4:
        approve["confirm"] = {
            "title": {"type": "plain_text", "text": "Approve a production change?"},
            "text": _mrkdwn(_confirm_text(request)),
            "confirm": {"type": "plain_text", "text": "Approve"},
            "deny": {"type": "plain_text", "text": "Back"},
            "style": "danger",
        }
    deny = {
        "type": "button",
        "action_id": DENY_ACTION,
        "style": "danger",
        "text": {"type": "plain_text", "text": "Deny"},
        "value": button_value(request),
    }
    return {"type": "actions", "block_id": f"approval:{request.id}", "elements": [approve, deny]}


def _confirm_text(request: ApprovalRequest) -> str:
    """Names the action without cutting anything: the card above shows the rest."""
    text = f"This runs {_ref(request)} on {code(request.target)} exactly as the card shows it."
    return text if len(text) <= CONFIRM_LIMIT else f"This runs {_ref(request)} exactly as the " \
        "card shows it."


def _outcome(request: ApprovalRequest) -> dict[str, Any]:
    icon = OUTCOME_ICONS.get(request.status, "")
    who = ", ".join(f"<@{u}>" for u in request.deciders)
    by = f" by {who}" if who else ""
    when = f" {_when(request.decided_at)}" if request.decided_at else ""
    reason = request.denial_reason
    why = f": {one_line(reason)}" if reason else ""
    return _section(truncate(f"{icon} *{request.status.value.capitalize()}*{by}{when}{why}",
                             SECTION_LIMIT))


def _when(at: datetime) -> str:
    ts = int(at.timestamp())
    fallback = at.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{ts}^{{date_short_pretty}} {{time}}|{fallback}>"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}

