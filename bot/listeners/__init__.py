"""Slack listeners, one module per surface; each exposes ``register(app, deps)``."""

from bot.listeners import (actions, alerts, assistant, commands, feedback, home, mentions,
                           runbook_drafts, shortcuts)


def register_all(app, deps, incidents=None) -> None:
    for module in (commands, mentions, actions, assistant, feedback, home, shortcuts,
                   runbook_drafts):
        module.register(app, deps)
    alerts.register(app, deps, incidents)
