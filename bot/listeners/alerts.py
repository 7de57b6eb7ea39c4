"""PagerDuty alerts posted into incident channels, and thread follow-ups (filled in later)."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.deps import BotDeps


def register(app: AsyncApp, deps: BotDeps) -> None:
    @app.event("message")
    async def message(event) -> None:
        return None
