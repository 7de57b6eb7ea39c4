"""The contract between opsbot and the in-container entrypoint.

opsbot writes one :class:`SandboxRequest` as JSON on the container's stdin and closes it. The
entrypoint (``python -m sandbox.entrypoint``) runs the action and writes exactly one
:class:`~tools.base.ToolResult` JSON object on stdout. While it runs, it may write progress
lines on stderr, each a JSON object ``{"progress": "<text>"}``; other stderr lines are kept as
diagnostics. Credentials travel only inside the stdin request.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from tools.base import Endpoint, Mount, ToolResult


class SandboxRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    call_id: str
    toolset: str
    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    egress: list[Endpoint] = Field(default_factory=list)
    mounts: list[Mount] = Field(default_factory=list)  # host directories
    # argv of a container made ready for this request ahead of time (its own warm-pool kind,
    # e.g. an MCP server already running); None: the common pool. Never carries secrets.
    warm: list[str] | None = None
    # host:port as declared -> host:port the container must dial instead (set by the runner)
    endpoints: dict[str, str] = Field(default_factory=dict)
    timeout: float = 30.0
    preview: bool = False  # run the action's dry run (Action.preview) instead of the action

    def wire(self) -> bytes:
        """The stdin payload: the only place secret values are revealed."""
        body = self.model_dump(mode="json", exclude={"secrets"})
        body["secrets"] = {k: v.get_secret_value() for k, v in self.secrets.items()}
        import json

        return json.dumps(body).encode() + b"\n"


class SandboxOutcome(BaseModel):
    """The action's result plus what the runner observed about the container."""

    result: ToolResult
    container_id: str | None = None
    exit_code: int | None = None
    duration_s: float = 0.0
    timed_out: bool = False
    output_truncated: bool = False
    network: str = "none"
    # seconds per runner step on the action's critical path (network, create, attach, start,
    # egress, exec); removal happens afterwards, in the background
    phases: dict[str, float] = Field(default_factory=dict)
    pooled: bool = False  # ran in a pre-started warm-pool container
    diagnostics: list[str] = Field(default_factory=list)  # last stderr lines, secrets scrubbed
