"""The task API under ``/api/v1``: programs start runs, follow them and cancel them, as the
Slack user their bearer token names (``opsbot tokens create``), through the same policy,
approvals and Slack reports as ``/ops``.

- ``models``: request and response bodies (pydantic), which also generate
- ``openapi``: the OpenAPI 3.1 document served at ``/api/v1/openapi.json``;
- ``handlers``: the aiohttp routes (errors are ``application/problem+json``);
- ``limits``: the per-token rate limit (429 with ``Retry-After``).
"""

from bot.api.handlers import ApiDeps, routes
from bot.api.limits import RateLimit

__all__ = ["ApiDeps", "RateLimit", "routes"]
