"""Pulumi connector: look at stacks and, behind approval, preview and apply changes.

Observe (tier 0): ``stacks``, ``outputs``, ``history``. Draft (tier 2): ``preview`` — its
output is the diff an approver reads. Changes (tier 3; policy raises ``stack: prod*`` to 4):
``refresh``, ``up`` (whose approval card shows a fresh preview via ``Action.preview``),
``cancel``.

It drives the Pulumi CLI through the automation API (``pulumi.automation``) against one project
directory (``work_dir``) and one state backend (``backend_url``, e.g. ``file:///srv/state``).
The stack passphrase and a Pulumi Cloud token, when needed, come as secrets, never as config.
Only stacks matching ``stacks`` (glob patterns) can be touched. Engine output streams line by
line to ``ctx.progress``; secrets are never shown (``show_secrets=False``, masked outputs).
This module is the declarative part policy and approvals read (config, params, tiers,
summaries, targets); what each action does through the automation API lives in
``tools/pulumi_ops.py``.

Usage::

    config = PulumiConfig(work_dir="/srv/infra", backend_url="file:///srv/state", stacks=("dev",))
    action = TOOLSET.action("preview")
    action.run(action.params.model_validate({"stack": "dev"}), ActionContext(config.model_dump()))
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tools import pulumi_ops as ops
from tools.base import Action, ActionContext, Endpoint, SecretRef, Target, Tier, ToolResult, Toolset
from tools.catalog import CallError

STACK_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class PulumiConfig(BaseModel):
    """One Pulumi project, its state backend, and the stacks opsbot may touch.

    ``project`` defaults to the ``name`` in ``work_dir``'s Pulumi.yaml (read once, when the
    config is loaded, so targets stay pure). ``extra_egress`` lists the ``host:port`` pairs the
    program's providers must reach (cloud APIs); the sandbox opens nothing else.
    """

    model_config = ConfigDict(frozen=True)

    work_dir: str
    backend_url: str
    stacks: tuple[str, ...] = Field(..., min_length=1)
    project: str = ""
    passphrase_secret: str | None = None
    access_token_secret: str | None = None
    extra_egress: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _project_from_pulumi_yaml(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("project") or not data.get("work_dir"):
            return data
        return data | {"project": project_name(Path(data["work_dir"]))}

    @field_validator("backend_url")
    @classmethod
    def _backend(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("file", "http", "https"):
            raise ValueError("must be file:///<absolute path> or an http(s) Pulumi Cloud URL")
        if parts.username or parts.password:
            raise ValueError("must not contain credentials; use access_token_secret")
        if parts.scheme == "file" and (parts.netloc or not parts.path.startswith("/")):
            raise ValueError("must name an absolute path, e.g. file:///srv/pulumi-state")
        return url

    @field_validator("passphrase_secret", "access_token_secret")
    @classmethod
    def _secret(cls, ref: str | None) -> str | None:
        return SecretRef.check(ref)

    @field_validator("extra_egress")
    @classmethod
    def _endpoints(cls, pairs: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in pairs if not re.fullmatch(r"[A-Za-z0-9.-]+:\d{1,5}", p)]
        if bad:
            raise ValueError(f"must be host:port, got {', '.join(bad)}")
        return pairs

    def allows(self, stack: str) -> bool:
        return any(fnmatchcase(stack, pattern) for pattern in self.stacks)


def project_name(work_dir: Path) -> str:
    """The project name declared in ``work_dir``'s Pulumi.yaml (or .yml)."""
    import yaml  # not needed inside the sandbox, where the config already names the project

    for name in ("Pulumi.yaml", "Pulumi.yml"):
        path = work_dir / name
        if path.is_file():
            declared = (yaml.safe_load(path.read_text()) or {}).get("name")
            if not declared:
                raise ValueError(f"{path} declares no `name`")
            return str(declared)
    raise ValueError(f"work_dir {work_dir} has no Pulumi.yaml; point it at a Pulumi project")


class StacksParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Stack(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stack: str = Field(..., pattern=STACK_PATTERN, description="Stack name, e.g. dev or prod.")


class OutputsParams(_Stack):
    pass


class HistoryParams(_Stack):
    limit: int = Field(10, ge=1, le=100, description="How many recent updates to list.")


class PreviewParams(_Stack):
    refresh: bool = Field(False, description="Refresh state from the cloud before previewing.")


class RefreshParams(_Stack):
    pass


class UpParams(_Stack):
    message: str | None = Field(
        None, max_length=200, description="Message recorded with the update in stack history."
    )


class CancelParams(_Stack):
    pass


def _select(p: _Stack, ctx: ActionContext):  # -> pulumi.automation.Stack
    from pulumi import automation as auto

    config = PulumiConfig.model_validate(ctx.config)
    if not config.allows(p.stack):
        raise CallError(f"Stack `{p.stack}` is not one opsbot may use.")
    return auto.Stack.select(p.stack, ops.workspace(config, ctx))


Body = Callable[[Any, Any, str, ActionContext], ToolResult]  # (stack, params, invocation, ctx)


def _cli(
    invocation: Callable[[Any], str], body: Body
) -> Callable[[Any, ActionContext], ToolResult]:
    """An action's ``run``: select the stack, call ``body``; failures become error values."""

    def run(p: _Stack, ctx: ActionContext) -> ToolResult:
        inv = invocation(p)
        return ops.guard(inv, lambda: body(_select(p, ctx), p, inv, ctx))

    return run


def _stacks(p: StacksParams, ctx: ActionContext) -> ToolResult:
    inv = "pulumi stack ls --json"
    return ops.guard(inv, lambda: ops.stacks(PulumiConfig.model_validate(ctx.config), inv, ctx))


PREVIEW = _cli(
    lambda p: (
        f"pulumi preview --diff --stack {p.stack}"
        + (" --refresh" if getattr(p, "refresh", False) else "")
    ),
    ops.preview,
)


ACTIONS: list[Action[Any]] = [
    Action(
        name="stacks",
        description="List the Pulumi stacks opsbot may use, with resource counts and last update.",
        tier=Tier.OBSERVE,
        params=StacksParams,
        summary=lambda p: "List Pulumi stacks",
        run=_stacks,
        timeout=60,
    ),
    Action(
        name="outputs",
        description="Show a stack's outputs (secret outputs are masked).",
        tier=Tier.OBSERVE,
        params=OutputsParams,
        summary=lambda p: f"Read the outputs of Pulumi stack `{p.stack}`",
        run=_cli(lambda p: f"pulumi stack output --json --stack {p.stack}", ops.outputs),
        timeout=60,
    ),
    Action(
        name="history",
        description="List a stack's recent updates (up, refresh, destroy) with results and "
        "resource changes. Use to find what was deployed before an incident.",
        tier=Tier.OBSERVE,
        params=HistoryParams,
        summary=lambda p: f"Read the last {p.limit} updates of Pulumi stack `{p.stack}`",
        run=_cli(
            lambda p: f"pulumi stack history --json --page-size {p.limit} --stack {p.stack}",
            ops.history,
        ),
        timeout=60,
    ),
    Action(
        name="preview",
        description="Preview what `up` would change on a stack (a diff; changes nothing).",
        tier=Tier.DRAFT,
        params=PreviewParams,
        summary=lambda p: (
            f"Preview changes to Pulumi stack `{p.stack}`"
            + (" (after a refresh)" if p.refresh else "")
        ),
        run=PREVIEW,
        timeout=600,
    ),
    Action(
        name="refresh",
        description="Refresh a stack's state from the real cloud resources (writes state only).",
        tier=Tier.SANDBOX_EXECUTE,
        params=RefreshParams,
        summary=lambda p: f"Refresh the state of Pulumi stack `{p.stack}`",
        run=_cli(lambda p: f"pulumi refresh --yes --stack {p.stack}", ops.refresh),
        timeout=600,
    ),
    Action(
        name="up",
        description="Apply the Pulumi program to a stack (creates, updates, deletes resources). "
        "Run `preview` first; the approver sees a fresh preview.",
        tier=Tier.SANDBOX_EXECUTE,
        params=UpParams,
        summary=lambda p: (
            f"Deploy (pulumi up) stack `{p.stack}`" + (f": {p.message}" if p.message else "")
        ),
        run=_cli(lambda p: f"pulumi up --yes --stack {p.stack}", ops.up),
        timeout=1800,
        preview=PREVIEW,
    ),
    Action(
        name="cancel",
        description="Cancel a stack's running update. Dangerous: may leave the stack inconsistent.",
        tier=Tier.SANDBOX_EXECUTE,
        params=CancelParams,
        summary=lambda p: f"Cancel the running update of Pulumi stack `{p.stack}`",
        run=_cli(lambda p: f"pulumi cancel --yes --stack {p.stack}", ops.cancel),
        timeout=60,
    ),
]


def _target(action: Action[Any], params: BaseModel, config: PulumiConfig) -> Target:
    stack = getattr(params, "stack", None)
    if stack is not None and not config.allows(stack):
        allowed = ", ".join(f"`{s}`" for s in config.stacks)
        raise CallError(f"Stack `{stack}` is not one opsbot may use (allowed: {allowed}).")
    shown = stack or "*"
    return Target(
        kind="pulumi_stack",
        name=f"{config.project}/{shown}",
        attrs={"stack": shown, "project": config.project},
    )


def _egress(action: Action[Any], params: BaseModel, config: PulumiConfig) -> list[Endpoint]:
    backend = ops.backend_endpoint(config)
    found = [backend] if backend else []
    for pair in config.extra_egress:
        host, _, port = pair.rpartition(":")
        found.append(Endpoint(host=host, port=int(port)))
    return found


def _secrets(action: Action[Any], params: BaseModel, config: PulumiConfig) -> list[SecretRef]:
    refs = [
        ("pulumi_passphrase", config.passphrase_secret),
        ("pulumi_token", config.access_token_secret),
    ]
    return [SecretRef.parse(name, ref) for name, ref in refs if ref]


TOOLSET: Toolset[PulumiConfig] = Toolset(
    name="pulumi",
    description="Pulumi: list stacks, outputs and history; preview; with approval refresh, "
    "deploy (up) or cancel an update.",
    config=PulumiConfig,
    actions=ACTIONS,
    target=_target,
    egress=_egress,
    secrets=_secrets,
)
