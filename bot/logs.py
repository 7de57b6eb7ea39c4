"""Structured JSON logs with run id, Slack user and channel bound to every line.

Entry points bind context with ``structlog.contextvars.bind_contextvars(run_id=..., user=...,
channel=...)``; the redaction processor runs last before rendering, so a secret that reached a
log call still never reaches the output.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from tools.secrets import REDACTOR


def redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    return REDACTOR.redact_obj(event)


class _Stderr:
    """Whatever ``sys.stderr`` is *now* (test runners swap it; a captured file may close)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", stream: Any = None) -> None:
    stream = stream or _Stderr()
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
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
