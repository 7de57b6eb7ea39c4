"""Shared test set-up.

Real services are started by fixtures in ``tests/services/`` (one module per service, loaded
as pytest plugins below); unreachable SaaS APIs are emulated by servers in ``tests/fakes/``.
"""

import logging

import pytest
import structlog

pytest_plugins = [
    "tests.services.redis",
    "tests.services.docker",
    "tests.services.openbao",
    "tests.services.postgres",
    "tests.fakes.slack",
    "tests.fakes.openai",
    "tests.scenarios.llm_harness",
]


@pytest.fixture
def logging_restored():
    """For tests that run ``opsbot``'s main (or ``bot.logs.configure``) in-process: it sets up
    structlog and the root logger for the whole process; put them back afterwards."""
    config, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)
