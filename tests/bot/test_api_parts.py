"""The task API's pure parts: the per-token rate limit, the request model, the document."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate
from pydantic import ValidationError

from bot.api.limits import RateLimit
from bot.api.models import RunRequest
from bot.api.openapi import document


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_token_gets_its_burst_then_waits_for_the_refill():
    clock = Clock()
    limit = RateLimit(per_minute=3, clock=clock)
    assert [limit.wait("t-a") for _ in range(3)] == [0, 0, 0]
    assert limit.wait("t-a") == 20  # one request every 20 s
    assert limit.wait("t-b") == 0  # per token
    clock.now = 20.0
    assert limit.wait("t-a") == 0 and limit.wait("t-a") == 20


@pytest.mark.parametrize("body", [{}, {"command": "redis info", "question": "why?"},
                                  {"command": "redis info", "channel": "#ops"},
                                  {"command": "redis info", "extra": 1}, {"command": ""}])
def test_bad_requests_are_refused(body):
    with pytest.raises(ValidationError):
        RunRequest.model_validate(body)


def test_the_document_is_valid_openapi_3_1_with_problem_errors():
    spec = document()
    validate(spec)
    start = spec["paths"]["/api/v1/runs"]["post"]["responses"]
    assert start["403"]["content"] == {"application/problem+json": {
        "schema": {"$ref": "#/components/schemas/Problem"}}}
    assert start["429"]["headers"]["Retry-After"]["required"] is True
    assert {"Run", "RunRequest", "Problem", "Cancelled", "Step", "Approval"} <= set(
        spec["components"]["schemas"])
