"""PagerDuty in, as one :class:`~graph.task.Alert`: Webhooks v3 and the Slack app's posts.

Pure functions: signature checks and parsing. Everything parsed here is untrusted text; it only
ever becomes the *subject* of an investigation, never an instruction or a policy input.

* Webhooks v3: one event per POST, ``X-PagerDuty-Signature: v1=<hex>[,v1=<hex>]`` is
  HMAC-SHA256 of the raw body (several during secret rotation: any may match).
* Slack posts: the classic integration (``subtype: bot_message`` with an attachment) and the
  current app (``bot_id`` + ``blocks``, no subtype). The incident id comes from the incident
  link (``…/incidents/<ID>``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from graph.task import Alert

INCIDENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
INCIDENT_LINK = re.compile(r"<(https?://[^|>]+/incidents/([A-Z0-9]+))\|([^>]*)>")
START_EVENTS = {"incident.triggered", "incident.reopened"}
STATUS_EVENTS = {"incident.acknowledged": "acknowledged", "incident.unacknowledged": "triggered",
                 "incident.resolved": "resolved", "incident.triggered": "triggered",
                 "incident.reopened": "triggered"}


class WebhookError(ValueError):
    """A webhook body opsbot can't use; ``str(e)`` says why."""


@dataclass(frozen=True)
class WebhookEvent:
    id: str
    type: str
    alert: Alert
    agent: str = ""

    @property
    def status(self) -> str | None:
        return STATUS_EVENTS.get(self.type)


def valid_signature(secret: str, body: bytes, header: str | None) -> bool:
    if not header:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    for part in header.split(","):
        version, _, digest = part.strip().partition("=")
        if version == "v1" and hmac.compare_digest(digest, expected):
            return True
    return False


def parse_webhook(body: bytes) -> WebhookEvent:
    try:
        event = json.loads(body)["event"]
        data = event["data"]
        kind = str(event["event_type"])
    except (ValueError, KeyError, TypeError, IndexError):
        raise WebhookError("not a PagerDuty v3 webhook (expected {\"event\": {...}})") from None
    if event.get("resource_type") != "incident" or not isinstance(data, dict) or "id" not in data:
        raise WebhookError(f"`{kind[:80]}` is not an incident event")
    if not isinstance(data["id"], str | int) or not INCIDENT_ID.fullmatch(str(data["id"])):
        raise WebhookError("the incident event has no usable incident id")
    alert = Alert(
        id=str(data["id"]), title=str(data.get("title") or f"incident {data['id']}")[:500],
        service=str(_dict(data.get("service")).get("summary") or "")[:200],
        urgency=str(data.get("urgency") or ""),
        status=STATUS_EVENTS.get(kind, str(data.get("status") or "")),
        link=str(data.get("html_url") or ""), raw=data,
    )
    return WebhookEvent(id=str(event.get("id") or ""), type=kind, alert=alert,
                        agent=str(_dict(event.get("agent")).get("summary") or ""))


def alert_from_message(event: dict[str, Any]) -> Alert | None:
    """The incident a PagerDuty Slack post announces, or None if it is not one."""
    texts = _texts(event)
    for text in texts:
        match = INCIDENT_LINK.search(text)
        if match:
            link, incident, label = match.groups()
            fields = _fields(event)
            title = re.sub(r"^\[?#\d+\]?:?\s*", "", label).strip() or label
            return Alert(id=incident, title=title[:500], service=fields.get("service", "")[:200],
                         urgency=fields.get("urgency", "").lower(),
                         status=fields.get("status", "triggered").lower(), link=link,
                         raw={"ts": event.get("ts"), "bot_id": event.get("bot_id")})
    return None


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The mappings in what should be a list of them (a post is untrusted JSON: anything may be
    anything)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _texts(event: dict[str, Any]) -> list[str]:
    texts = [str(event.get("text") or "")]
    for attachment in _dicts(event.get("attachments")):
        texts += [str(attachment.get(k) or "") for k in ("title", "text", "fallback")]
    for block in _dicts(event.get("blocks")):
        texts.append(str(_dict(block.get("text")).get("text") or ""))
    return texts


def _fields(event: dict[str, Any]) -> dict[str, str]:
    """Service / urgency / status from attachment fields or block fields, lower-cased keys."""
    found: dict[str, str] = {}
    for attachment in _dicts(event.get("attachments")):
        for f in _dicts(attachment.get("fields")):
            found[str(f.get("title", "")).lower()] = _plain(str(f.get("value", "")))
    for block in _dicts(event.get("blocks")):
        for f in _dicts(block.get("fields")):
            key, _, value = str(f.get("text", "")).partition("\n")
            found[key.strip("*: ").lower()] = _plain(value)
    return found


def _plain(text: str) -> str:
    return re.sub(r"<[^|>]+\|([^>]*)>", r"\1", text).strip()
