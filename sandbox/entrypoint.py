"""Inside the sandbox container: read one request, run one action, write one result.

``python -m sandbox.entrypoint`` is the image's command. It says ``{"ready": true}`` on stderr
and only then blocks on stdin; with ``--preload [NAMES]`` (what the pool uses) it first imports
the connectors NAMES lists (comma-separated toolset names, plus ``shell`` and ``mcp``; every
one when no list follows) and the libraries their actions load when they run
(``Toolset.preload``), so a pre-started (warm-pool) container has paid Python's start-up cost
before a request exists, and only for what the deployment configured (a box that preloads
everything costs ~0.85 s of CPU, one for Redis alone ~0.25 s). Without it (a cold container, where
the request is already waiting) it imports only the connector the request names; with
``--mcp <server entry JSON>`` it starts that MCP server and opens its session before saying
ready, so the one call it will get skips the server's start; with ``--warm module:function``
it runs a connector's own warm-up (``Toolset.warm``: the AWS connector parses its service
models). The protocol
(``sandbox/protocol.py``):

* stdin: one :class:`~sandbox.protocol.SandboxRequest` JSON, then EOF;
* stdout: exactly one :class:`~tools.base.ToolResult` JSON object (anything an action or a
  library prints goes to stderr instead, so it cannot corrupt the result);
* stderr: ``{"progress": "..."}`` lines, other lines are diagnostics.

Every failure becomes an error ``ToolResult``; no traceback is printed, and every secret value
from the request is scrubbed from the result and from progress text.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any, BinaryIO, TextIO

from pydantic import BaseModel, ValidationError

import tools
from sandbox.protocol import SandboxRequest
from tools.base import Action, ActionContext, ToolResult
from tools.catalog import describe_validation
from tools.secrets import Redactor

# what the machinery beside the registered connectors loads, by the name a deployment gives it
MACHINERY = {"shell": ("tools.shell", "tools.shell_ssh", "asyncssh"),
             "mcp": ("tools.mcp", "tools.mcp_call", "mcp", "mcp.client.stdio")}

Emit = Callable[[str], None]


def main() -> int:
    result_stream = _private_stdout()
    args = sys.argv[1:]
    if "--preload" in args:
        _preload(_listed(args, "--preload"))
    if "--warm" in args:
        _warm(args[args.index("--warm") + 1])
    if "--mcp" in args:  # a warm-pool container of an MCP server: start it first
        from tools import mcp, mcp_call

        server = mcp.ServerEntry.model_validate_json(args[args.index("--mcp") + 1])

        return mcp_call.prestarted(server, _ready, lambda: _answer(result_stream))
    _ready()
    _answer(result_stream)
    return 0


def _ready() -> None:
    sys.stderr.write(json.dumps({"ready": True}) + "\n")
    sys.stderr.flush()


def _answer(result_stream: BinaryIO) -> None:
    raw = sys.stdin.buffer.read()
    result = handle(raw, _progress_writer(sys.stderr))
    result_stream.write(result.model_dump_json().encode() + b"\n")
    result_stream.flush()


def _private_stdout() -> BinaryIO:
    """Keep fd 1 for the result only; point ``print`` and libraries at stderr."""
    result_fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(result_fd, "wb")


def _listed(args: list[str], flag: str) -> list[str] | None:
    """The comma-separated names after ``flag``; None when no list follows it."""
    after = args[args.index(flag) + 1:]
    if not after or after[0].startswith("--"):
        return None
    return [name for name in after[0].split(",") if name]


def _preload(names: list[str] | None = None) -> None:
    """A pooled container imports its deployment's connectors ahead, with the libraries their
    actions load when they run (``None``: every one); a cold one only its request's."""
    for name in (tools.REGISTRY | MACHINERY) if names is None else names:
        for module in _modules(name):
            try:
                importlib.import_module(module)
            except ImportError:
                continue


def _modules(name: str) -> tuple[str, ...]:
    if name in MACHINERY:
        return MACHINERY[name]
    toolset = tools.toolset(name)
    return toolset.preload if toolset is not None else ()


def _warm(target: str) -> None:
    """``--warm tools.aws_ops:warm``: a toolset's own warm-up (its pool kind's command), e.g.
    parsing boto3's service models before the call; only functions of connector modules."""
    module, _, function = target.partition(":")
    if module.startswith("tools.") and function.isidentifier():
        getattr(importlib.import_module(module), function)()


def _progress_writer(stream: TextIO) -> Emit:
    def write(text: str) -> None:
        stream.write(json.dumps({"progress": str(text)}) + "\n")
        stream.flush()

    return write


def handle(raw: bytes, emit: Emit) -> ToolResult:
    """Parse, validate and run; a bad request or a crash is an error result, never a raise."""
    try:
        request = SandboxRequest.model_validate_json(raw)
    except ValidationError as e:
        return ToolResult.fail("sandbox", f"The sandbox got a malformed request: "
                               f"{describe_validation(e)}")
    redactor = Redactor(shapes=())  # secret values; shapes are redacted on the host (policy)
    for secret in request.secrets.values():
        redactor.add(secret.get_secret_value())
    result = _run(request, lambda text: emit(redactor.redact(text)))
    return ToolResult.model_validate(redactor.redact_obj(result.model_dump(mode="json")))


def _run(request: SandboxRequest, emit: Emit) -> ToolResult:
    invocation = f"{request.toolset} {request.action}"
    action = _action(request)
    if action is None:
        return ToolResult.fail(invocation, f"This sandbox image has no action `{invocation}`; "
                               "rebuild it with `opsbot sandbox build`.")
    try:
        params = action.params.model_validate(request.params)
    except ValidationError as e:
        return ToolResult.fail(invocation, f"Bad parameters: {describe_validation(e)}")
    ctx = ActionContext(
        config=request.config,
        secrets={name: value.get_secret_value() for name, value in request.secrets.items()},
        endpoints=request.endpoints,
        progress=emit,
    )
    if request.preview:
        if action.preview is None:
            return ToolResult.fail(invocation, f"`{invocation}` has no preview.")
        emit(f"Previewing `{invocation}` in the sandbox")
        return _guarded(action.preview, params, ctx, invocation)
    emit(f"Running `{invocation}` in the sandbox")
    return _guarded(action.run, params, ctx, invocation)


def _action(request: SandboxRequest) -> Action | None:
    """The request's action, importing only what it needs: its connector's module, or the
    shell or MCP machinery (a cold container pays for exactly these imports)."""
    found = tools.find(request.toolset, request.action)
    if found is not None:
        return found
    if request.toolset == "shell":
        from tools import shell

        return shell.sandbox_action(request.toolset, request.action, request.config)
    from tools import mcp

    return mcp.sandbox_action(request.action, request.config)


def _guarded(run: Callable[..., Any], params: BaseModel, ctx: ActionContext, invocation: str
             ) -> ToolResult:
    try:
        result = run(params, ctx)
    except MemoryError:
        return ToolResult.fail(invocation, "The action ran out of memory.")
    except Exception as e:  # noqa: BLE001 - a connector bug is reported as a value
        return ToolResult.fail(invocation, f"The action crashed: {type(e).__name__}: {e}")
    if not isinstance(result, ToolResult):
        return ToolResult.fail(invocation, f"The action returned {type(result).__name__}, "
                               "not a ToolResult.")
    return result


if __name__ == "__main__":
    sys.exit(main())
