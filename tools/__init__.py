"""Connectors: typed actions with risk tiers.

The registry is an explicit table (no directory scan): toolset name → the module and attribute
that hold its ``TOOLSET``. Add a connector with a line here. Nothing is imported until asked
for: the host imports every connector (``TOOLSETS``), the sandbox entrypoint only the one its
request names (``find``), which keeps a cold container's start-up to that one connector's
imports (all of them: ~430 ms of the image's interpreter start, measured in issue 16).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tools.base import Action, Toolset

REGISTRY: dict[str, tuple[str, str]] = {
    "redis": ("tools.redis", "TOOLSET"),
    "postgres": ("tools.postgres", "TOOLSET"),
    "docker": ("tools.docker", "TOOLSET"),
    "github": ("tools.github", "TOOLSET"),
    "pulumi": ("tools.pulumi", "TOOLSET"),
    "neon": ("tools.openapi_apis", "NEON_TOOLSET"),
    "lambda": ("tools.openapi_apis", "LAMBDA_TOOLSET"),
    "estuary": ("tools.estuary", "TOOLSET"),  # openapi_apis.ESTUARY_TOOLSET's status plus disable/enable
    "qdrant": ("tools.openapi_apis", "QDRANT_TOOLSET"),
    "vault": ("tools.vault", "TOOLSET"),
    "aws": ("tools.aws", "TOOLSET"),
}


def toolset(name: str) -> Toolset | None:
    """The registered toolset ``name`` (importing its module only), or None."""
    where = REGISTRY.get(name)
    if where is None:
        return None
    module, attribute = where
    return getattr(importlib.import_module(module), attribute)


def find(toolset_name: str, action: str) -> Action | None:
    """The registered action ``toolset.action``, or None."""
    found = toolset(toolset_name)
    return found.action(action) if found is not None else None


def __getattr__(name: str) -> Any:
    """``TOOLSETS``: every registered toolset, in registry order (imports every connector)."""
    if name == "TOOLSETS":
        every = tuple(toolset(n) for n in REGISTRY)
        globals()["TOOLSETS"] = every
        return every
    raise AttributeError(f"module 'tools' has no attribute {name!r}")
