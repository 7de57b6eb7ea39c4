"""Redaction of secrets in everything opsbot writes: Slack, LLM requests, audit rows, logs,
tool results (so checkpoints and data files hold them redacted too).

Two kinds of secret are removed:

* **values** opsbot knows: every secret the credential broker reads and opsbot's own
  configured tokens are registered with :meth:`Redactor.add` and replaced by ``[redacted]``;
* **shapes** of well-known secrets anyone may paste or a tool may print (cloud keys, Slack,
  GitHub and OpenAI tokens, private keys, JWTs, passwords in URLs ...), replaced by a marker
  naming the shape: ``[redacted:slack-token]``. :data:`SHAPES` lists them; the policy file's
  ``redaction`` section picks which apply and adds an operator's own (``Redactor.use``).

Values minted per action (dynamic database passwords, SSH keys) are added as ``transient``
and ``release``-d when the action's lease is revoked: live ones are always redacted, and the
newest :data:`RELEASED_KEPT` released ones too (a late echo of a dead credential), without the
pattern growing with every action opsbot ever ran (each value costs every redaction time).

Most of what a run redacts it redacts many times (a checkpointed message in every model
request, the keys of every JSON row), so redactions are remembered until the values or shapes
change, within a budget of characters (:data:`CACHED_CHARS`, :data:`CACHE_BUDGET`).

Usage::

    REDACTOR.add("s3cr3t")
    REDACTOR.redact("password is s3cr3t")            # 'password is [redacted]'
    REDACTOR.redact("token xoxb-1234-5678-abcdefgh")  # 'token [redacted:slack-token]'
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MASK = "[redacted]"
MIN_LENGTH = 4  # shorter values would redact ordinary words; Vault secrets are longer
RELEASED_KEPT = 32
CACHED_CHARS = 65_536  # a longer text's redaction is not remembered
CACHE_BUDGET = 2_000_000  # characters of texts and redactions remembered, then it starts again
CACHE_ENTRY = 160  # what an entry costs besides its characters (dict slot, tuple, str headers)


@dataclass(frozen=True)
class Shape:
    """A well-known secret's form. With a ``secret`` group only that part is replaced (a URL
    keeps its user and host); ``check`` can veto a match (a 40-character hex SHA is not a key).
    """

    name: str
    pattern: re.Pattern[str]
    check: Any = None  # Callable[[str], bool] | None

    def redact(self, text: str) -> str:
        return self.pattern.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        secret = "secret" in self.pattern.groupindex and match.group("secret")
        found = secret or match.group(0)
        if self.check is not None and not self.check(found):
            return match.group(0)
        marker = f"[redacted:{self.name}]"
        if not secret:
            return marker
        start, end = match.span("secret")
        whole = match.group(0)
        return whole[: start - match.start()] + marker + whole[end - match.start():]


def shape(name: str, pattern: str, check: Any = None) -> Shape:
    return Shape(name, re.compile(pattern), check)


def _mixed(text: str) -> bool:
    """Upper, lower case and digits: a random key, not a hex digest or a word."""
    return (any(c.islower() for c in text) and any(c.isupper() for c in text)
            and any(c.isdigit() for c in text))


_B = r"(?<![A-Za-z0-9_])"  # the start of a token
_E = r"(?![A-Za-z0-9_])"
SHAPES: tuple[Shape, ...] = (
    shape("private-key", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
          r"(?:[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|[\s\S]*)"),
    shape("aws-access-key-id", _B + r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)"
          r"[A-Z0-9]{16}" + _E),
    shape("aws-secret-access-key", r"(?<![A-Za-z0-9/+])(?P<secret>[A-Za-z0-9/+]{40})"
          r"(?![A-Za-z0-9/+=])", _mixed),
    shape("slack-token", _B + r"xox[abposre]-[A-Za-z0-9-]{10,}"),
    shape("slack-app-token", _B + r"xapp-\d-[A-Za-z0-9-]{10,}"),
    shape("slack-webhook", r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_-]+"),
    shape("github-token", _B + r"(?:gh[pousr]_[A-Za-z0-9]{36,255}"
          r"|github_pat_[A-Za-z0-9_]{22,255})" + _E),
    shape("openai-key", _B + r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}" + _E),
    shape("google-api-key", _B + r"AIza[0-9A-Za-z_-]{35}" + _E),
    shape("stripe-key", _B + r"(?:sk|rk)_live_[0-9A-Za-z]{20,}" + _E),
    shape("jwt", _B + r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    shape("url-password", r"[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*:(?P<secret>[^\s@/?#]+)@"),
    shape("bearer-token", r"(?i)\b(?:authorization:\s*(?:bearer|basic|token)|bearer)\s+"
          r"(?P<secret>[A-Za-z0-9._~+/-]{16,}=*)"),
)


class Redactor:
    def __init__(self, released_kept: int = RELEASED_KEPT,
                 shapes: Iterable[Shape] = SHAPES) -> None:
        self._shapes: tuple[Shape, ...] = tuple(shapes)
        self._values: set[str] = set()
        self._live: set[str] = set()
        self._released: OrderedDict[str, None] = OrderedDict()
        self._kept = released_kept
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, str]] = {}
        self._cached = 0  # characters in the cache (keys and redactions) and entry costs
        self._generation = 0  # of values and shapes: a redaction remembered under another is stale

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
        self._changed()

    def _changed(self) -> None:
        """After the pattern or shapes changed (in that order: a redaction that reads the new
        generation then reads the new pattern too); remembered redactions are dropped."""
        self._generation += 1
        self._cache, self._cached = {}, 0

    def use(self, shapes: Iterable[Shape]) -> None:
        """The shapes to redact from now on (the policy's ``redaction`` section)."""
        self._shapes = tuple(shapes)
        with self._lock:
            self._changed()

    @property
    def shapes(self) -> tuple[Shape, ...]:
        return self._shapes

    def redact(self, text: str) -> str:
        if not text or not isinstance(text, str):
            return text
        if len(text) > CACHED_CHARS:
            return self._redact(text)
        generation, cache = self._generation, self._cache
        remembered = cache.get(text)
        if remembered is not None and remembered[0] == generation:
            return remembered[1]
        redacted = self._redact(text)
        if self._cached > CACHE_BUDGET:
            cache.clear()
            self._cached = 0
        cache[text] = (generation, redacted)
        self._cached += len(text) + len(redacted) + CACHE_ENTRY
        return redacted

    def _redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        for found in self._shapes:
            text = found.redact(text)
        return text

    def found(self, text: str) -> list[str]:
        """The names of the secret shapes (and ``value`` for a known secret) in ``text``."""
        redacted = self.redact(text)
        names = re.findall(r"\[redacted:([a-z0-9-]+)\]", redacted)
        known = redacted.count(MASK) - text.count(MASK)
        return list(dict.fromkeys(names + (["value"] if known > 0 else [])))

    def redact_obj(self, value: Any) -> Any:
        """Redact every string inside a JSON-shaped value (dicts, lists, scalars); dict keys
        too (a tool may key its data by what it found)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {self.redact(k) if isinstance(k, str) else k: self.redact_obj(v)
                    for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_obj(v) for v in value]
        return value

    def __len__(self) -> int:
        return len(self._values) + len(self._live) + len(self._released)


REDACTOR = Redactor()
