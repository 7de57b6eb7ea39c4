"""The Alertmanager receiver's pure parts: credentials as http_config sends them, and the v4
webhook body as one alert group."""

import base64
import json
from pathlib import Path

import pytest

from bot.alertmanager import Credentials, PayloadError, parse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
FIRING = (FIXTURES / "alertmanager_payments_firing.json").read_bytes()
RESOLVED = (FIXTURES / "alertmanager_payments_resolved.json").read_bytes()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


BOTH = Credentials(token="am-token", user="alertmanager", password="am-password")


@pytest.mark.parametrize("credentials, header, ok", [
    (BOTH, "Bearer am-token", True),
    (BOTH, "bearer  am-token ", True),
    (BOTH, basic("alertmanager", "am-password"), True),
    (BOTH, "Bearer am-token2", False),
    (BOTH, "Bearer ", False),
    (BOTH, basic("alertmanager", "wrong"), False),
    (BOTH, basic("someone", "am-password"), False),
    (BOTH, "Basic not-base64!", False),
    (BOTH, "Token am-token", False),
    (BOTH, "", False),
    (BOTH, None, False),
    (Credentials(token="am-token"), basic("alertmanager", ""), False),  # no password set
    (Credentials(user="alertmanager", password="am-password"), "Bearer ", False),  # no token
])
def test_credentials(credentials, header, ok):
    assert credentials.accept(header) is ok


def test_a_firing_group_is_one_alert_keyed_by_its_group():
    note = parse(FIRING)
    assert note.firing and note.count == 2 and note.labels["team"] == "payments"
    alert = note.alert
    assert (alert.origin, alert.title, alert.service, alert.urgency, alert.status, alert.link) == (
        "Alertmanager", "checkout 5xx ratio above 5%", "checkout", "critical", "firing",
        "http://alertmanager-0:9093")
    assert [a["labels"]["instance"] for a in alert.details["alerts"]] == [
        "10.0.3.11:8080", "10.0.3.12:8080"]
    resolved = parse(RESOLVED)
    assert not resolved.firing and resolved.key == note.key == f"alertmanager:{alert.id}"


@pytest.mark.parametrize("body, error", [
    (b"not json", "not an Alertmanager webhook"),
    (b"[]", "not an Alertmanager webhook"),
    (json.dumps({**json.loads(FIRING), "version": "3"}).encode(), "version '3' is not supported"),
    (json.dumps({**json.loads(FIRING), "status": "pending"}).encode(),
     "status 'pending' is neither firing nor resolved"),
    (json.dumps({**json.loads(FIRING), "alerts": {}}).encode(), "`alerts` is not a list"),
])
def test_unusable_bodies_say_why(body, error):
    with pytest.raises(PayloadError, match=error):
        parse(body)


def test_hostile_values_are_bounded_strings():
    data = json.loads(FIRING)
    data["commonLabels"] = {"team": ["payments"], "x" * 500: "y" * 5000}
    data["alerts"] = [None, 3, *data["alerts"] * 30]
    note = parse(json.dumps(data).encode())
    assert note.labels["team"] == "['payments']" and note.count == 60
    assert len(note.alert.details["alerts"]) == 20 and note.alert.details["alerts_not_shown"] == 40
    assert all(len(k) <= 100 and len(v) <= 1000 for k, v in note.labels.items())
