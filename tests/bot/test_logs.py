"""Logging set-ups: ``opsbot chat`` keeps the terminal for the conversation."""

import io
import json
import logging

import pytest
import structlog

from bot import logs
from tools.secrets import REDACTOR


@pytest.mark.usefixtures("logging_restored")
def test_console_logs_go_to_a_file_and_only_warnings_reach_the_terminal(tmp_path):
    REDACTOR.add("console-log-canary-4f1e")
    terminal = io.StringIO()
    path = tmp_path / "data" / "opsbot.log"
    logs.configure_console("info", path, terminal)
    log = structlog.get_logger("opsbot.test")
    log.info("opsbot ready", toolsets=["redis"])
    log.warning("sandbox.firewall.unavailable", reason="not root console-log-canary-4f1e")
    logging.getLogger("aiohttp.access").info("library chatter")
    for handler in logging.getLogger().handlers:
        handler.flush()

    assert terminal.getvalue() == (
        "warning: sandbox.firewall.unavailable reason=not root [redacted]\n")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines] == [
        "opsbot ready", "sandbox.firewall.unavailable", "library chatter"]
    assert lines[0]["toolsets"] == ["redis"] and lines[1]["level"] == "warning"
    assert "console-log-canary-4f1e" not in path.read_text()
