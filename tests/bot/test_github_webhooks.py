"""GitHub webhooks' pure parts: the X-Hub-Signature-256 check and which events become runs."""

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from bot.github_webhooks import EventError, Failure, Ignored, Review, parse, valid_signature

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
PULL = json.loads((FIXTURES / "github_pull_request_opened.json").read_text())
CHECK = json.loads((FIXTURES / "github_check_run_failed.json").read_text())
SECRET = "gh-webhook-secret"


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


BODY = json.dumps(PULL).encode()


@pytest.mark.parametrize("header, ok", [
    (sign(BODY), True),
    (sign(BODY, "other"), False),
    (sign(BODY + b"\n"), False),  # verified on the whole body as sent
    ("sha1=" + sign(BODY)[7:], False),
    ("sha256=", False), ("", False), (None, False),
])
def test_signatures(header, ok):
    assert valid_signature(SECRET, BODY, header) is ok


def event(data: dict, **changes) -> bytes:
    return json.dumps(data | changes).encode()


def test_an_opened_pull_request_is_a_review_of_quoted_facts():
    review = parse("pull_request", BODY)
    assert isinstance(review, Review) and (review.repo, review.number) == ("acme/shop", 1347)
    alert = review.alert
    assert alert.origin == "GitHub" and alert.request.startswith("review this GitHub pull request")
    assert alert.title.startswith("acme/shop#1347: Retry card authorisation")
    assert alert.details["head_sha"] == "6dcb09b5b57875f334f61aebed695e2e4193db5e"
    assert "maintenance mode" in alert.details["body"]  # untrusted: kept as data, not request
    assert "merge" not in alert.request
    assert isinstance(parse("pull_request", event(PULL, action="synchronize")), Review)


def test_a_failed_check_on_the_default_branch_is_one_failure_per_commit():
    failure = parse("check_run", json.dumps(CHECK).encode())
    assert isinstance(failure, Failure)
    assert failure.key == "github:failure:acme/shop:a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
    assert failure.alert.title == "check `tests (3.11)` failed on acme/shop main (a1b2c3d)"
    assert failure.alert.details["output_summary"].startswith("test_refund_idempotency")
    workflow = {"action": "completed", "repository": CHECK["repository"], "workflow_run": {
        "name": "CI", "head_branch": "main", "head_sha": CHECK["check_run"]["head_sha"],
        "conclusion": "failure", "html_url": "https://github.com/acme/shop/actions/runs/1"}}
    same = parse("workflow_run", json.dumps(workflow).encode())
    assert isinstance(same, Failure) and same.key == failure.key


def with_run(**changes) -> bytes:
    data = json.loads(json.dumps(CHECK))
    data["check_run"].update(changes)
    return json.dumps(data).encode()


@pytest.mark.parametrize("name, body, reason", [
    ("ping", b'{"zen": "Design for failure.", "hook_id": 1}', "ping"),
    ("issues", BODY, "`issues` events are not acted on"),
    ("pull_request", event(PULL, action="closed"), "pull_request `closed` is not reviewed"),
    ("check_run", with_run(conclusion="success"), "not a failed run (completed, success)"),
    ("check_run", event(CHECK, action="created"), "not a failed run (created, failure)"),
    ("check_run", with_run(check_suite={"head_branch": "retry-auth"}),
     "failed on `retry-auth`, not on the default branch"),
])
def test_other_events_are_ignored_with_a_reason(name, body, reason):
    ignored = parse(name, body)
    assert isinstance(ignored, Ignored) and ignored.reason.startswith(reason)


@pytest.mark.parametrize("name, body, error", [
    ("pull_request", b"not json", "not a GitHub `pull_request` event with a repository"),
    ("pull_request", event(PULL, pull_request={"number": "x"}), "lacks the fields"),
    ("check_run", event(CHECK, check_run=[]), "lacks the fields"),
])
def test_unreadable_events_say_why(name, body, error):
    with pytest.raises(EventError, match=error):
        parse(name, body)
