"""Connectors: typed actions with risk tiers.

The registry is an explicit list (no directory scan). Add a connector by importing its
``TOOLSET`` here.
"""

from tools import aws, docker, estuary, github, openapi_apis, postgres, pulumi, redis, vault
from tools.base import Action, Toolset

TOOLSETS: tuple[Toolset, ...] = (
    redis.TOOLSET,
    postgres.TOOLSET,
    docker.TOOLSET,
    github.TOOLSET,
    pulumi.TOOLSET,
    openapi_apis.NEON_TOOLSET,
    openapi_apis.LAMBDA_TOOLSET,
    estuary.TOOLSET,  # openapi_apis.ESTUARY_TOOLSET's status plus disable/enable
    openapi_apis.QDRANT_TOOLSET,
    vault.TOOLSET,
    aws.TOOLSET,
)


def find(toolset: str, action: str) -> Action | None:
    """The registered action ``toolset.action``, or None."""
    for candidate in TOOLSETS:
        if candidate.name == toolset:
            return candidate.action(action)
    return None
