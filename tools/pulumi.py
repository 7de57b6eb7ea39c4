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

from tools.base import Action, ActionContext, Endpoint, SecretRef, Target, Tier, ToolResult, Toolset
from tools.catalog import CallError

STACK_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
MAX_OUTPUT_CHARS = 20_000
NO_CLI = (
    "The Pulumi CLI is not installed in the sandbox image; the automation API needs the "
    "`pulumi` binary on PATH."
)
NO_SDK = "The Pulumi SDK (the `pulumi` Python package) is not installed in the sandbox image."
SECRET = "[secret]"


def _secret_ref(name: str, ref: str) -> SecretRef:
    if ref.startswith("static:"):
        return SecretRef(name=name, path=ref, key=ref.removeprefix("static:"))
    path, _, key = ref.partition("#")
    return SecretRef(name=name, path=path, key=key)


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
        if ref is None or re.fullmatch(r"static:[A-Z][A-Z0-9_]*|[\w./-]+#[\w.-]+", ref):
            return ref
        raise ValueError("must look like static:NAME or kv/data/<path>#<key>")

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


def _env(config: PulumiConfig, ctx: ActionContext) -> dict[str, str]:
    env = {"PULUMI_BACKEND_URL": _backend_via(config, ctx), "PULUMI_SKIP_UPDATE_CHECK": "true"}
    names = {"pulumi_passphrase": "PULUMI_CONFIG_PASSPHRASE", "pulumi_token": "PULUMI_ACCESS_TOKEN"}
    return env | {var: ctx.secrets[key] for key, var in names.items() if key in ctx.secrets}


def _backend_endpoint(config: PulumiConfig) -> Endpoint | None:
    """The remote backend's host:port; None for a ``file://`` backend."""
    parts = urlsplit(config.backend_url)
    if parts.scheme == "file" or not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Endpoint(host=parts.hostname, port=port)


def _backend_via(config: PulumiConfig, ctx: ActionContext) -> str:
    """The backend URL, dialled through the sandbox's mapping when it is remote."""
    endpoint = _backend_endpoint(config)
    if endpoint is None:
        return config.backend_url
    host, port = ctx.address(endpoint.host, endpoint.port)
    return urlsplit(config.backend_url)._replace(netloc=f"{host}:{port}").geturl()


def _workspace(config: PulumiConfig, ctx: ActionContext):  # -> pulumi.automation.LocalWorkspace
    from pulumi import automation as auto

    return auto.LocalWorkspace(work_dir=config.work_dir, env_vars=_env(config, ctx))


def _select(p: _Stack, ctx: ActionContext):  # -> pulumi.automation.Stack
    from pulumi import automation as auto

    config = PulumiConfig.model_validate(ctx.config)
    if not config.allows(p.stack):
        raise CallError(f"Stack `{p.stack}` is not one opsbot may use.")
    return auto.Stack.select(p.stack, _workspace(config, ctx))


def _last_error(message: str) -> str:
    """The useful part of a CLI failure: its ``error:`` lines, else the tail of stderr."""
    stderr = message.rpartition("\n stderr: ")[2].strip() or message.strip()
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error:")]
    return " ".join(errors or lines[-3:])[:1000] or "the Pulumi CLI failed without a message"


def _guard(inv: str, fn: Callable[[], ToolResult]) -> ToolResult:
    """Run ``fn``; a missing CLI, unknown stack or failed command becomes an error result."""
    try:
        from pulumi.automation import errors
    except ImportError:
        return ToolResult.fail(inv, NO_SDK)
    try:
        return fn()
    except FileNotFoundError as e:
        if Path(str(e.filename or "")).name == "pulumi":
            return ToolResult.fail(inv, NO_CLI)
        return ToolResult.fail(inv, f"Missing file: {e.filename}.")
    except errors.InvalidVersionError as e:
        return ToolResult.fail(inv, f"The Pulumi CLI in the sandbox image is too old: {e}")
    except errors.StackNotFoundError as e:
        return ToolResult.fail(inv, f"No such stack in the backend: {_last_error(str(e))}")
    except errors.ConcurrentUpdateError:
        return ToolResult.fail(inv, "Another update is running on this stack; try again later.")
    except errors.CommandError as e:
        return ToolResult.fail(inv, _last_error(str(e)))
    except CallError as e:
        return ToolResult.fail(inv, str(e))


def _capped(text: str) -> str:
    """The last MAX_OUTPUT_CHARS of engine output (the summary is at the end)."""
    if len(text) <= MAX_OUTPUT_CHARS:
        return text.strip()
    return (
        f"… ({len(text) - MAX_OUTPUT_CHARS} earlier characters)\n"
        + text[-MAX_OUTPUT_CHARS:].strip()
    )


def _changes(ops: Any) -> dict[str, int]:
    return {getattr(op, "value", str(op)): int(n) for op, n in (ops or {}).items()}


Body = Callable[[Any, Any, str, ActionContext], ToolResult]  # (stack, params, invocation, ctx)


def _cli(
    invocation: Callable[[Any], str], body: Body
) -> Callable[[Any, ActionContext], ToolResult]:
    """An action's ``run``: select the stack, call ``body``; failures become error values."""

    def run(p: _Stack, ctx: ActionContext) -> ToolResult:
        inv = invocation(p)
        return _guard(inv, lambda: body(_select(p, ctx), p, inv, ctx))

    return run


def _none(inv: str, output: str) -> ToolResult:
    return ToolResult(status="no_data", invocation=inv, output=output)


def _stacks(p: StacksParams, ctx: ActionContext) -> ToolResult:
    inv = "pulumi stack ls --json"

    def go() -> ToolResult:
        config = PulumiConfig.model_validate(ctx.config)
        stacks = _workspace(config, ctx).list_stacks()
        found = [s for s in stacks if config.allows(s.name.split("/")[-1])]
        rows = [
            {
                "name": s.name,
                "resources": s.resource_count or 0,
                "last_update": s.last_update.isoformat() if s.last_update else "never",
                "updating": bool(s.update_in_progress),
            }
            for s in found
        ]
        if not rows:
            return _none(inv, "No stacks opsbot may use.")
        lines = [
            f"{r['name']}: {r['resources']} resources, last update {r['last_update']}"
            + (" (update in progress)" if r["updating"] else "")
            for r in rows
        ]
        return ToolResult.ok(inv, "\n".join(lines), rows)

    return _guard(inv, go)


def _outputs(stack: Any, p: OutputsParams, inv: str, ctx: ActionContext) -> ToolResult:
    shown = {k: SECRET if v.secret else v.value for k, v in stack.outputs().items()}
    if not shown:
        return _none(inv, f"`{p.stack}` has no outputs.")
    return ToolResult.ok(inv, "\n".join(f"{k}: {v}" for k, v in sorted(shown.items())), shown)


def _history(stack: Any, p: HistoryParams, inv: str, ctx: ActionContext) -> ToolResult:
    rows = [
        {
            "version": u.version,
            "kind": u.kind,
            "result": u.result,
            "started": u.start_time.isoformat(),
            "message": u.message,
            "changes": _changes(u.resource_changes),
        }
        for u in stack.history(page_size=p.limit, page=1, show_secrets=False)
    ]
    if not rows:
        return _none(inv, f"`{p.stack}` has no updates.")
    lines = [
        f"v{r['version']} {r['kind']} {r['result']} {r['started']} {r['changes']}" for r in rows
    ]
    return ToolResult.ok(inv, "\n".join(lines), rows)


def _preview(stack: Any, p: _Stack, inv: str, ctx: ActionContext) -> ToolResult:
    refresh = bool(getattr(p, "refresh", False))
    result = stack.preview(diff=True, refresh=refresh, color="never", on_output=ctx.progress)
    return ToolResult.ok(inv, _capped(result.stdout), {"changes": _changes(result.change_summary)})


def _updated(inv: str, result: Any) -> ToolResult:
    summary = result.summary
    data = {"result": summary.result, "version": summary.version}
    data["changes"] = _changes(summary.resource_changes)
    return ToolResult.ok(inv, _capped(result.stdout), data)


def _refresh(stack: Any, p: RefreshParams, inv: str, ctx: ActionContext) -> ToolResult:
    return _updated(inv, stack.refresh(color="never", on_output=ctx.progress, show_secrets=False))


def _up(stack: Any, p: UpParams, inv: str, ctx: ActionContext) -> ToolResult:
    options = {"color": "never", "on_output": ctx.progress, "show_secrets": False}
    return _updated(inv, stack.up(message=p.message, **options))


def _cancel(stack: Any, p: CancelParams, inv: str, ctx: ActionContext) -> ToolResult:
    stack.cancel()
    return ToolResult.ok(inv, f"Cancelled the running update of `{p.stack}`.")


PREVIEW = _cli(
    lambda p: (
        f"pulumi preview --diff --stack {p.stack}"
        + (" --refresh" if getattr(p, "refresh", False) else "")
    ),
    _preview,
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
        run=_cli(lambda p: f"pulumi stack output --json --stack {p.stack}", _outputs),
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
            _history,
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
        run=_cli(lambda p: f"pulumi refresh --yes --stack {p.stack}", _refresh),
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
        run=_cli(lambda p: f"pulumi up --yes --stack {p.stack}", _up),
        timeout=1800,
        preview=PREVIEW,
    ),
    Action(
        name="cancel",
        description="Cancel a stack's running update. Dangerous: may leave the stack inconsistent.",
        tier=Tier.SANDBOX_EXECUTE,
        params=CancelParams,
        summary=lambda p: f"Cancel the running update of Pulumi stack `{p.stack}`",
        run=_cli(lambda p: f"pulumi cancel --yes --stack {p.stack}", _cancel),
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
    backend = _backend_endpoint(config)
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
    return [_secret_ref(name, ref) for name, ref in refs if ref]


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
