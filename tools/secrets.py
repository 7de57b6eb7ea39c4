"""Redaction of secret values that passed through opsbot.

Every secret value the credential broker reads is registered with the process-wide
:data:`REDACTOR`; the log processor, the Slack and audit writers and the LLM prompt builder pass
text through :meth:`Redactor.redact` so the exact value never leaves the process.

Values minted per action (dynamic database passwords, SSH keys) are added as ``transient``
and ``release``-d when the action's lease is revoked: live ones are always redacted, and the
newest :data:`RELEASED_KEPT` released ones too (a late echo of a dead credential), without the
pattern growing with every action opsbot ever ran (each value costs every redaction time).

Usage::

    REDACTOR.add("s3cr3t")
    REDACTOR.redact("password is s3cr3t")   # 'password is [redacted]'
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any

MASK = "[redacted]"
MIN_LENGTH = 4  # shorter values would redact ordinary words; Vault secrets are longer
RELEASED_KEPT = 32


class Redactor:
    def __init__(self, released_kept: int = RELEASED_KEPT) -> None:
        self._values: set[str] = set()
        self._live: set[str] = set()
        self._released: OrderedDict[str, None] = OrderedDict()
        self._kept = released_kept
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str, transient: bool = False) -> None:
        if not isinstance(value, str) or len(value) < MIN_LENGTH:
            return
        with self._lock:
            if value in self._values or value in self._live:
                return
            self._released.pop(value, None)
            (self._live if transient else self._values).add(value)
            self._compile()

    def release(self, value: str) -> None:
        """A transient value's credential is dead: keep redacting it for a while, not forever."""
        with self._lock:
            if value not in self._live:
                return
            self._live.discard(value)
            self._released[value] = None
            while len(self._released) > self._kept:
                self._released.popitem(last=False)
            self._compile()

    def _compile(self) -> None:
        values = self._values | self._live | self._released.keys()
        ordered = sorted(values, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None

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
        return len(self._values) + len(self._live) + len(self._released)


REDACTOR = Redactor()
