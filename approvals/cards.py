"""Block Kit for approval cards: pure functions of an :class:`ApprovalRequest`.

Every field respects Block Kit limits (section text 3,000, button value 2,000, confirm text 300,
50 blocks): long params and previews are cut with a visible marker rather than failing with
``invalid_blocks``.

Usage::

    message = approval_card(request)     # {"text": ..., "blocks": [...]}
    client.chat_postMessage(channel=..., thread_ts=..., **message)
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from approvals.models import ApprovalRequest, ApprovalStatus

APPROVE_ACTION = "opsbot_approve"
DENY_ACTION = "opsbot_deny"
DENY_VIEW = "opsbot_deny_reason"
SECTION_LIMIT = 3000
MARKER = "… (truncated)"
TIER_NAMES = {0: "observe", 1: "recommend", 2: "draft", 3: "sandbox-execute", 4: "production"}
OUTCOME_ICONS = {
    ApprovalStatus.APPROVED: ":white_check_mark:",
    ApprovalStatus.DENIED: ":no_entry:",
    ApprovalStatus.EXPIRED: ":hourglass:",
    ApprovalStatus.CANCELLED: ":heavy_multiplication_x:",
}


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(MARKER)] + MARKER


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
        _section(f"*Approval needed:* {escape(request.summary)}"),
        _fields(request),
        _section(f"*Why:* {escape(request.reason)}"),
    ]
    if request.preview:
        preview = truncate(escape(request.preview), SECTION_LIMIT - 20)
        blocks.append(_section(f"*Preview*\n```{preview}```"))
    blocks.append(_params(request))
    if request.status is ApprovalStatus.PENDING:
        blocks.append(_buttons(request))
    else:
        blocks.append(_outcome(request))
    return {"text": _fallback(request), "blocks": blocks}


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
            _section(f"Deny: {escape(request.summary)}"),
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


def _fallback(request: ApprovalRequest) -> str:
    state = "needs approval" if request.status is ApprovalStatus.PENDING else request.status.value
    return truncate(f"{request.summary} ({request.target}) {state}", 300)


def _fields(request: ApprovalRequest) -> dict[str, Any]:
    rule = request.rule
    got = len(request.approvals)
    items = [
        f"*Target*\n{escape(request.target)}",
        f"*Tier*\n{request.tier} {TIER_NAMES.get(request.tier, '')}",
        f"*Requested by*\n<@{request.requester}>",
        f"*Who may approve*\n{rule.describe()}",
        f"*Approvals*\n{got} of {rule.required}",
        f"*Expires*\n{_when(request.expires_at)}",
    ]
    return {"type": "section", "fields": [_mrkdwn(truncate(i, 2000)) for i in items]}


def _params(request: ApprovalRequest) -> dict[str, Any]:
    params = json.dumps(request.canonical.get("params", {}), indent=1, sort_keys=True)
    text = truncate(f"params `{params}` · rule `{request.policy_rule}` · id `{request.id}`", 2000)
    return {"type": "context", "elements": [_mrkdwn(escape(text))]}


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
            "text": _mrkdwn(truncate(f"This will run: {escape(request.summary)}", 300)),
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


def _outcome(request: ApprovalRequest) -> dict[str, Any]:
    icon = OUTCOME_ICONS.get(request.status, "")
    who = ", ".join(f"<@{u}>" for u in request.deciders)
    by = f" by {who}" if who else ""
    when = f" {_when(request.decided_at)}" if request.decided_at else ""
    reason = request.denial_reason
    why = f": {escape(reason)}" if reason else ""
    return _section(f"{icon} *{request.status.value.capitalize()}*{by}{when}{why}")


def _when(at: datetime) -> str:
    ts = int(at.timestamp())
    fallback = at.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{ts}^{{date_short_pretty}} {{time}}|{fallback}>"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(truncate(text, SECTION_LIMIT))}


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def escape(text: str) -> str:
    """Slack's three control characters; keeps untrusted text from forming mentions or links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
