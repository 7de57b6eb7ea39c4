"""What opsbot must never write anywhere: its own tokens, and the secret shapes the policy picks.

:func:`protect` runs once the settings and the policy are loaded (``bot.wiring.runtime``). From
then on everything that goes through :data:`tools.secrets.REDACTOR` — log lines, Slack messages
and files, audit rows, LLM requests, tool results (and so checkpoints and data files) — has
opsbot's configured tokens replaced by ``[redacted]`` and well-known secret shapes by
``[redacted:<shape>]``.
"""

from __future__ import annotations

from pydantic import SecretStr

from bot.settings import Settings
from graph.policy import Policy
from tools.secrets import REDACTOR


def protect(settings: Settings, policy: Policy) -> None:
    for value in configured_secrets(settings):
        REDACTOR.add(value)
    REDACTOR.use(policy.redaction())


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret setting's value (Slack, OpenAI, Vault, GitHub, PagerDuty tokens ...)."""
    values = (getattr(settings, name) for name in type(settings).model_fields)
    return [v.get_secret_value() for v in values if isinstance(v, SecretStr)]
