"""Fixtures for end-to-end scenarios: the whole bot behind a Slack emulator.

``h`` runs in embedded mode (SQLite) unless the module asks for both storage modes::

    pytestmark = pytest.mark.parametrize("storage", ["sqlite", "postgres"], indirect=True)
"""

import pytest

from tests.fakes.slack import SlackEmulator
from tests.scenarios.harness import harness, settings_for


@pytest.fixture
def storage(request) -> dict[str, str]:
    """Settings for the storage mode: nothing (SQLite), or a fresh PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return {}
    return {"database_url": request.getfixturevalue("postgres_database")}


@pytest.fixture
async def h(slack_emulator: SlackEmulator, redis_server, sandbox_image, tmp_path, storage):
    settings = settings_for(slack_emulator, redis_server.url, tmp_path / "data", **storage)
    async with harness(settings, slack_emulator) as running:
        yield running
