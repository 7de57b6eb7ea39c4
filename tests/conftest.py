"""Shared test set-up.

Real services are started by fixtures in ``tests/services/`` (one module per service, loaded
as pytest plugins below); unreachable SaaS APIs are emulated by servers in ``tests/fakes/``.
"""

pytest_plugins = [
    "tests.services.redis",
    "tests.services.docker",
    "tests.services.openbao",
    "tests.services.postgres",
    "tests.fakes.slack",
    "tests.fakes.openai",
]
