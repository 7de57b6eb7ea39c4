"""Every sentence the sandbox puts in an error ``ToolResult``, in one place.

They are shown to chat users and fed to the LLM, so each says what happened and, where the
operator can fix it, how.
"""

from __future__ import annotations


def size(n: int) -> str:
    """``1 MB`` for 1_000_000, ``1 MiB`` for 1_048_576, otherwise bytes."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def seconds(value: float) -> str:
    return f"{value:g}"


def timed_out(limit_s: float) -> str:
    return f"The action timed out after {seconds(limit_s)} s and was killed."


def out_of_memory(memory_mb: int) -> str:
    return f"The action ran out of memory ({memory_mb} MiB limit) and was killed."


def output_cut(cap: int) -> str:
    return f"The action's output exceeded {size(cap)}; it was cut and the action was stopped."


def image_missing(tag: str) -> str:
    return f"The sandbox image {tag} was not found: run `opsbot sandbox build`."


def no_result(exit_code: int | None, last_line: str) -> str:
    code = "was killed" if exit_code is None else f"exited with code {exit_code}"
    detail = f" Last diagnostic: {last_line}" if last_line else ""
    return f"The action {code} without writing a result.{detail}"


def malformed_result() -> str:
    return "The action wrote malformed output instead of one ToolResult JSON object."


def engine_failed(step: str, explanation: str) -> str:
    return f"The Docker engine failed to {step}: {explanation}"


def egress_failed(detail: str) -> str:
    return (f"Could not give the sandbox its declared network access: {detail}. Egress needs "
            "the Docker engine on the same host as opsbot.")


def bad_endpoint_host(host: str) -> str:
    return (f"The declared endpoint host {host[:80]!r} is neither an IP address nor a valid DNS "
            "name; fix the connector's configuration.")


def runner_closed() -> str:
    return "The sandbox runner is shutting down; the action was not started."


def waiting_for_slot(limit: int) -> str:
    return f"waiting for a free sandbox: {limit} actions are running on this opsbot (its limit)"


def no_free_slot(limit: int, waited_s: float) -> str:
    return (f"Not run: opsbot was already running as many sandboxed actions as it may at once "
            f"({limit}), and none finished within {seconds(waited_s)} s. Try again when the "
            "others are done.")


def pulumi_cli_missing() -> str:
    return ("the sandbox image holds the Pulumi SDK but no Pulumi CLI (none was on the host's "
            "PATH when the image was built); install the CLI on the host, then run "
            "`opsbot sandbox build`.")


def instance_in_use(instance: str) -> str:
    return (f"the sandbox instance name {instance} is held by another live opsbot process on "
            "this host; each process needs its own.")
