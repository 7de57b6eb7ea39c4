"""Redaction of secret values that passed through opsbot.

Every secret value the credential broker reads is registered with the process-wide
:data:`REDACTOR`; the log processor, the Slack and audit writers and the LLM prompt builder pass
text through :meth:`Redactor.redact` so the exact value never leaves the process.

Usage::

    REDACTOR.add("s3cr3t")
    REDACTOR.redact("password is s3cr3t")   # 'password is [redacted]'
"""

from __future__ import annotations

import re
import threading
from typing import Any

MASK = "[redacted]"
MIN_LENGTH = 4  # shorter values would redact ordinary words; Vault secrets are longer


class Redactor:
    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        if not isinstance(value, str) or len(value) < MIN_LENGTH:
            return
        with self._lock:
            if value in self._values:
                return
            self._values.add(value)
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def redact_obj(self, value: Any) -> Any:
        """Redact every string inside a JSON-shaped value (dicts, lists, scalars)."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self.redact_obj(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_obj(v) for v in value]
        return value

    def __len__(self) -> int:
        return len(self._values)


REDACTOR = Redactor()
