"""Structured JSON logs with run id, Slack user and channel bound to every line.

In ``opsbot chat`` the terminal belongs to the conversation: :func:`configure_console` sends the
JSON lines to a file and shows only warnings, readably.

Entry points bind context with ``structlog.contextvars.bind_contextvars(run_id=..., user=...,
channel=...)``; the redaction processor runs last before rendering, so a secret that reached a
log call still never reaches the output.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import structlog

from graph import tracing
from tools.secrets import REDACTOR


def redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    return REDACTOR.redact_obj(event)


def traced(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """The trace id of the span a line was logged in, while traces are exported."""
    trace_id = tracing.trace_id()
    if trace_id is not None:
        event.setdefault("trace_id", trace_id)
    return event


class CurrentStderr:
    """Whatever ``sys.stderr`` is *now* (test runners swap it; a captured file may close)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", stream: Any = None) -> None:
    stream = stream or CurrentStderr()
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        traced,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
        structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(numeric, stream)


def configure_console(level: str, path: Path, stream: Any = None) -> None:
    """``opsbot chat``: the conversation owns the terminal. Every log line (JSON, redacted) goes
    to ``path``; only warnings and errors reach the terminal, as one readable line each
    (``warning: sandbox.firewall.unavailable reason=…``)."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    path.parent.mkdir(parents=True, exist_ok=True)
    structlog.configure(
        processors=[*_PRE_CHAIN, structlog.processors.format_exc_info,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(_formatter(structlog.processors.JSONRenderer()))
    to_file.setLevel(numeric)
    to_terminal = logging.StreamHandler(stream or CurrentStderr())
    to_terminal.setFormatter(_formatter(_readable))
    to_terminal.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.handlers = [to_file, to_terminal]
    root.setLevel(numeric)


_PRE_CHAIN: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _formatter(render: Any) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redact, render],
        foreign_pre_chain=_PRE_CHAIN,
    )


def _readable(_: Any, __: str, event: dict[str, Any]) -> str:
    """``warning: <event> key=value …`` for a person at the terminal (no timestamp noise)."""
    level, text = event.pop("level", "warning"), event.pop("event", "")
    event.pop("timestamp", None)
    details = " ".join(f"{k}={v}" for k, v in event.items() if k != "exception")
    trace = f"\n{event['exception']}" if event.get("exception") else ""
    return f"{level}: {text}{' ' + details if details else ''}{trace}"


def _route_stdlib(level: int, stream: Any) -> None:
    """Library logs (slack_bolt, aiohttp, docker) go through the same JSON + redaction path."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redact,
            structlog.processors.JSONRenderer(),
        ],
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(level, logging.INFO))
