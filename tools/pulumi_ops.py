"""What each Pulumi action does, through the automation API, once ``tools.pulumi`` has a stack.

Each ``(stack, params, invocation, ctx)`` function is an action body; ``tools.pulumi._cli``
wraps it into the action's ``run`` (config, allow-list, stack selection, error mapping). Split
from ``tools/pulumi.py`` so that module stays the declarative part policy reads: config,
params, tiers, summaries, targets.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tools.base import ActionContext, Endpoint, ToolResult
from tools.catalog import CallError

if TYPE_CHECKING:
    from tools.pulumi import (
        CancelParams,
        HistoryParams,
        OutputsParams,
        PulumiConfig,
        RefreshParams,
        UpParams,
        _Stack,
    )

MAX_OUTPUT_CHARS = 20_000
NO_CLI = (
    "The Pulumi CLI is not installed in the sandbox image; the automation API needs the "
    "`pulumi` binary on PATH."
)
NO_SDK = "The Pulumi SDK (the `pulumi` Python package) is not installed in the sandbox image."
SECRET = "[secret]"


def _env(config: PulumiConfig, ctx: ActionContext) -> dict[str, str]:
    env = {"PULUMI_BACKEND_URL": _backend_via(config, ctx), "PULUMI_SKIP_UPDATE_CHECK": "true"}
    names = {"pulumi_passphrase": "PULUMI_CONFIG_PASSPHRASE", "pulumi_token": "PULUMI_ACCESS_TOKEN"}
    return env | {var: ctx.secrets[key] for key, var in names.items() if key in ctx.secrets}


def backend_endpoint(config: PulumiConfig) -> Endpoint | None:
    """The remote backend's host:port; None for a ``file://`` backend."""
    parts = urlsplit(config.backend_url)
    if parts.scheme == "file" or not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Endpoint(host=parts.hostname, port=port)


def _backend_via(config: PulumiConfig, ctx: ActionContext) -> str:
    """The backend URL, dialled through the sandbox's mapping when it is remote."""
    endpoint = backend_endpoint(config)
    if endpoint is None:
        return config.backend_url
    host, port = ctx.address(endpoint.host, endpoint.port)
    return urlsplit(config.backend_url)._replace(netloc=f"{host}:{port}").geturl()


def workspace(config: PulumiConfig, ctx: ActionContext):  # -> pulumi.automation.LocalWorkspace
    from pulumi import automation as auto

    return auto.LocalWorkspace(work_dir=config.work_dir, env_vars=_env(config, ctx))


def _last_error(message: str) -> str:
    """The useful part of a CLI failure: its ``error:`` lines, else the tail of stderr."""
    stderr = message.rpartition("\n stderr: ")[2].strip() or message.strip()
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error:")]
    return " ".join(errors or lines[-3:])[:1000] or "the Pulumi CLI failed without a message"


def guard(inv: str, fn: Callable[[], ToolResult]) -> ToolResult:
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


def stacks(config: PulumiConfig, inv: str, ctx: ActionContext) -> ToolResult:
    listed = workspace(config, ctx).list_stacks()
    found = [s for s in listed if config.allows(s.name.split("/")[-1])]
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
        return ToolResult.no_data(inv, "No stacks opsbot may use.")
    lines = [
        f"{r['name']}: {r['resources']} resources, last update {r['last_update']}"
        + (" (update in progress)" if r["updating"] else "")
        for r in rows
    ]
    return ToolResult.ok(inv, "\n".join(lines), rows)


def outputs(stack: Any, p: OutputsParams, inv: str, ctx: ActionContext) -> ToolResult:
    shown = {k: SECRET if v.secret else v.value for k, v in stack.outputs().items()}
    if not shown:
        return ToolResult.no_data(inv, f"`{p.stack}` has no outputs.")
    return ToolResult.ok(inv, "\n".join(f"{k}: {v}" for k, v in sorted(shown.items())), shown)


def history(stack: Any, p: HistoryParams, inv: str, ctx: ActionContext) -> ToolResult:
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
        return ToolResult.no_data(inv, f"`{p.stack}` has no updates.")
    lines = [
        f"v{r['version']} {r['kind']} {r['result']} {r['started']} {r['changes']}" for r in rows
    ]
    return ToolResult.ok(inv, "\n".join(lines), rows)


def preview(stack: Any, p: _Stack, inv: str, ctx: ActionContext) -> ToolResult:
    refresh = bool(getattr(p, "refresh", False))
    result = stack.preview(diff=True, refresh=refresh, color="never", on_output=ctx.progress)
    return ToolResult.ok(inv, _capped(result.stdout), {"changes": _changes(result.change_summary)})


def _updated(inv: str, result: Any) -> ToolResult:
    summary = result.summary
    data = {"result": summary.result, "version": summary.version}
    data["changes"] = _changes(summary.resource_changes)
    return ToolResult.ok(inv, _capped(result.stdout), data)


def refresh(stack: Any, p: RefreshParams, inv: str, ctx: ActionContext) -> ToolResult:
    return _updated(inv, stack.refresh(color="never", on_output=ctx.progress, show_secrets=False))


def up(stack: Any, p: UpParams, inv: str, ctx: ActionContext) -> ToolResult:
    options = {"color": "never", "on_output": ctx.progress, "show_secrets": False}
    return _updated(inv, stack.up(message=p.message, **options))


def cancel(stack: Any, p: CancelParams, inv: str, ctx: ActionContext) -> ToolResult:
    stack.cancel()
    return ToolResult.ok(inv, f"Cancelled the running update of `{p.stack}`.")
