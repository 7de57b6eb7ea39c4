"""Logs are JSON lines with run id, Slack user and channel bound to every line of a run."""

import io
import json

import pytest

from bot import logs
from tests.scenarios.harness import CHANNEL, REQUESTER

pytestmark = pytest.mark.docker


@pytest.fixture
def captured(logging_restored):
    buffer = io.StringIO()
    logs.configure("info", stream=buffer)
    return buffer


async def test_run_log_lines_carry_run_user_and_channel(captured, h, redis_db):
    await h.command("redis info section=server")
    report = await h.report(await h.run_thread())
    run_id = report.text.split("`")[1]
    lines = [json.loads(line) for line in captured.getvalue().splitlines() if line.strip()]
    mine = [line for line in lines if line.get("run_id") == run_id]
    assert mine, f"no log line for {run_id}: {lines[-5:]}"
    assert all(line["user"] == REQUESTER and line["channel"] == CHANNEL for line in mine)
    assert all({"timestamp", "level", "event"} <= line.keys() for line in lines)
