"""opsbot's exception tree. Known user errors are shown verbatim; anything else gets a short
reference id in chat and the full story in the log.

    OpsbotError
    ├── ConfigError        bad or missing configuration; raised at boot, one sentence
    └── UserError          a request opsbot refuses; the sentence is shown to the user
"""

from __future__ import annotations


class OpsbotError(Exception):
    """Base class; ``str(e)`` is always a sentence fit for the person who caused it."""


class ConfigError(OpsbotError):
    pass


class UserError(OpsbotError):
    pass
