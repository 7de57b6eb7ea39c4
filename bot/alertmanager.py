"""Prometheus Alertmanager in, as one :class:`~graph.task.Alert` per alert group.

Pure functions: the receiver's credentials check and the parser of Alertmanager's webhook
(``version: "4"``, one notification per POST for one group: ``groupKey``, ``status`` firing or
resolved, the alerts with their labels and annotations). Alertmanager re-sends a firing group
every ``repeat_interval`` and when its alerts change, then once more when it resolves (with
``send_resolved``); the group key ties them together.

Everything parsed here is untrusted text (anyone who can make a service emit a label writes
it): it only becomes the *subject* of an investigation, shown to the model as quoted data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from graph.task import Alert

ORIGIN = "Alertmanager"
MAX_ALERTS_SHOWN = 20


class PayloadError(ValueError):
    """A body opsbot can't use as an Alertmanager notification; ``str(e)`` says why."""


@dataclass(frozen=True)
class Credentials:
    """What ``http_config`` may send: ``authorization`` (Bearer) and/or ``basic_auth``."""

    token: str | None = None
    user: str | None = None
    password: str | None = None

    def accept(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries one of the configured credentials,
        compared in constant time."""
        scheme, _, given = (header or "").strip().partition(" ")
        if scheme.lower() == "bearer" and self.token:
            return hmac.compare_digest(given.strip().encode(), self.token.encode())
        if scheme.lower() == "basic" and self.password:
            return self._basic(given.strip())
        return False

    def _basic(self, given: str) -> bool:
        try:
            user, _, password = base64.b64decode(given, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        same_user = hmac.compare_digest(user.encode(), (self.user or "").encode())
        same_password = hmac.compare_digest(password.encode(), (self.password or "").encode())
        return same_user and same_password


@dataclass(frozen=True)
class GroupNotification:
    """One notification: a group's key, whether it fires, and the alert opsbot investigates."""

    group_key: str
    firing: bool
    labels: dict[str, str]  # the labels every alert of the group shares (routing reads these)
    alert: Alert
    count: int  # alerts in the notification

    @property
    def key(self) -> str:
        """The group's key in the records (``alertmanager:`` + the group key's hash)."""
        return f"alertmanager:{self.alert.id}"


def parse(body: bytes) -> GroupNotification:
    try:
        data = json.loads(body)
        group_key, status = str(data["groupKey"]), str(data["status"])
    except (ValueError, KeyError, TypeError):
        raise PayloadError('not an Alertmanager webhook (expected {"version": "4", '
                           '"groupKey": ..., "status": ..., "alerts": [...]})') from None
    if str(data.get("version")) != "4":
        raise PayloadError(f"Alertmanager webhook version {str(data.get('version'))[:10]!r} "
                           "is not supported (only version 4)")
    if status not in ("firing", "resolved"):
        raise PayloadError(f"status {status[:20]!r} is neither firing nor resolved")
    if not isinstance(data.get("alerts"), list):
        raise PayloadError("`alerts` is not a list")
    labels = _strings(data.get("commonLabels"))
    alerts = [a for a in data["alerts"] if isinstance(a, dict)]
    return GroupNotification(group_key, status == "firing", labels,
                             _alert(data, group_key, status, labels, alerts), len(alerts))


def _alert(data: dict[str, Any], group_key: str, status: str, labels: dict[str, str],
           alerts: list[dict[str, Any]]) -> Alert:
    annotations = _strings(data.get("commonAnnotations"))
    name = labels.get("alertname") or _strings(data.get("groupLabels")).get("alertname", "")
    title = annotations.get("summary") or name or "Alertmanager alert group"
    return Alert(
        id=hashlib.sha256(group_key.encode()).hexdigest()[:20], origin=ORIGIN,
        title=title[:500], service=(labels.get("service") or labels.get("job") or "")[:200],
        urgency=labels.get("severity", "")[:40], status=status,
        link=str(data.get("externalURL") or "")[:500],
        details={"group_labels": _strings(data.get("groupLabels")), "common_labels": labels,
                 "common_annotations": annotations,
                 "alerts": [_one(a) for a in alerts[:MAX_ALERTS_SHOWN]],
                 "alerts_not_shown": max(0, len(alerts) - MAX_ALERTS_SHOWN)})


def _one(alert: dict[str, Any]) -> dict[str, Any]:
    return {"status": str(alert.get("status") or "")[:20], "labels": _strings(alert.get("labels")),
            "annotations": _strings(alert.get("annotations")),
            "starts_at": str(alert.get("startsAt") or "")[:40]}


def _strings(value: Any) -> dict[str, str]:
    """A label or annotation map as strings, bounded (untrusted JSON may hold anything)."""
    if not isinstance(value, dict):
        return {}
    return {str(k)[:100]: str(v)[:1000] for k, v in list(value.items())[:50]}
