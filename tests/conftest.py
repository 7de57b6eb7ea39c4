"""Shared test set-up.

Real services are started by fixtures in ``tests/services/`` (one module per service, loaded
as pytest plugins below); unreachable SaaS APIs are emulated by servers in ``tests/fakes/``.
"""

import logging
import os

import pytest
import structlog
from hypothesis import HealthCheck, settings

# Property tests: no per-example deadline (CI's 2 cores are shared), a fixed budget of examples,
# and derandomized so a CI failure reproduces locally (HYPOTHESIS_PROFILE=explore searches more).
settings.register_profile("ci", deadline=None, max_examples=150, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", deadline=None, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))



def pytest_configure(config):
    """Log lines of code under test go to stderr, as opsbot's own set-up sends them
    (``bot.logs``): a test reading a command's stdout reads only what the command printed,
    never a line a background task of an in-process bot logged meanwhile."""
    from bot.logs import CurrentStderr

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(CurrentStderr()))


pytest_plugins = [
    "tests.services.redis",
    "tests.services.docker",
    "tests.services.openbao",
    "tests.services.postgres",
    "tests.services.vault_engines",
    "tests.services.moto",
    "tests.services.sshd",
    "tests.services.records",
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
