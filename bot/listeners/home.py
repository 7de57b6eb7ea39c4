"""The App Home tab: published for the viewer each time they open it (``bot/home.py``)."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.deps import BotDeps
from bot.home import publish


def register(app: AsyncApp, deps: BotDeps) -> None:
    @app.event("app_home_opened")
    async def opened(event, client) -> None:
        if event.get("tab") == "home" and event.get("user"):
            deps.spawn(publish(deps, client, event["user"]))
