"""Slack listeners, one module per surface; each exposes ``register(app, deps)``."""

from bot.listeners import actions, alerts, commands, mentions


def register_all(app, deps) -> None:
    for module in (commands, mentions, actions, alerts):
        module.register(app, deps)
