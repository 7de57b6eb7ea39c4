"""Inside the sandbox: one declared command over SSH, with the action's certificate.

asyncssh keeps the private key and the certificate in memory (nothing is written to the
container's disk), reads no SSH config or agent, trusts only the host keys the operator pinned
for the declared host (whatever address the egress forwarder gives), and runs exactly one
command. Output beyond the cap is cut and the command is closed.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

from tools.base import ActionContext, ToolResult
from tools.shell import CommandSpec, ShellConfig, pinned_keys

with warnings.catch_warnings():  # asyncssh imports DSA support, which cryptography deprecates
    warnings.simplefilter("ignore")
    import asyncssh


def run_command(config: ShellConfig, spec: CommandSpec, host: str, command: str,
                ctx: ActionContext) -> ToolResult:
    invocation = f"ssh {spec.user or config.user}@{host} {command}"
    try:
        status, out, err, cut = asyncio.run(_session(config, spec, host, command, ctx))
    except Exception as e:  # noqa: BLE001 - asyncssh, OSError, timeout: a value for the user
        return ToolResult.fail(invocation, _failure(e, host))
    text = out + (f"\n… (output cut at {config.output_cap} bytes)" if cut else "")
    if status != 0 and not cut:  # a cut command was closed by us: its exit status is ours
        tail = (err.strip() or out.strip())[-2000:]
        return ToolResult.fail(invocation, f"exit status {status}: {tail}")
    return ToolResult.ok(invocation, text.rstrip("\n"), {"exit_status": status})


async def _session(config: ShellConfig, spec: CommandSpec, host: str, command: str,
                   ctx: ActionContext) -> tuple[int | None, str, str, bool]:
    key = asyncssh.import_private_key(ctx.secrets["ssh_private_key"])
    cert = asyncssh.import_certificate(ctx.secrets["ssh_certificate"])
    trusted = [asyncssh.import_public_key(k) for k in pinned_keys(config.known_hosts, host,
                                                                  config.port)]
    address, port = ctx.address(host, config.port)
    ctx.progress(f"Connecting to {host} as {spec.user or config.user}")
    async with asyncssh.connect(
        address, port, username=spec.user or config.user, client_keys=[(key, cert)],
        known_hosts=(trusted, [], []), agent_path=None, config=[], password=None,
        kbdint_auth=False, preferred_auth="publickey", connect_timeout=10,
    ) as conn:
        return await asyncio.wait_for(_execute(conn, command, config.output_cap), spec.timeout_s)


async def _execute(conn: Any, command: str, cap: int) -> tuple[int | None, str, str, bool]:
    process = await conn.create_process(command, stdin=None)
    out, cut = await _read(process.stdout, cap)
    err, _ = await _read(process.stderr, cap)
    if cut:
        process.close()
        return None, out, err, True
    completed = await process.wait()
    return completed.exit_status, out, err, False


async def _read(stream: Any, cap: int) -> tuple[str, bool]:
    chunks: list[str] = []
    size = 0
    while size <= cap:
        chunk = await stream.read(65_536)
        if not chunk:
            return "".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    return "".join(chunks)[:cap], True


def _failure(error: Exception, host: str) -> str:
    name = type(error).__name__
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        return f"{host} presented a host key that is not pinned for it; nothing ran."
    if isinstance(error, asyncssh.PermissionDenied):
        return f"{host} refused the action's SSH certificate (permission denied); nothing ran."
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return f"the command on {host} did not finish in time and was stopped."
    return f"SSH to {host} failed: {name}: {error}"
