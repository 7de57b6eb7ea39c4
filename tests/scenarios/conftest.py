"""Fixtures for end-to-end scenarios: the whole bot behind a Slack emulator."""

import pytest

from tests.fakes.slack import SlackEmulator
from tests.scenarios.harness import harness, settings_for


@pytest.fixture
async def h(slack_emulator: SlackEmulator, redis_server, sandbox_image, tmp_path):
    settings = settings_for(slack_emulator, redis_server.url, tmp_path / "data")
    async with harness(settings, slack_emulator) as running:
        yield running
