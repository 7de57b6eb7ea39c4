"""Check after acting: once a change ran, run its declared check and say whether the fix held.

The check (``tools.base.Check``) is a call like any other: resolved from the catalog, reviewed
by policy (a read-only action, so tier 0: allowed without approval unless the policy says
otherwise, in which case the report says it was not run and why), run in the sandbox with its
own credentials, audited. ``fixed(result)`` decides; the check's output is the evidence. A
check that fails or cannot be run leaves the question open ("not checked"), never "fixed".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graph.policy import Proposer, Verdict
from graph.surface import CheckReport, StepState
from tools.base import Check, Status, ToolResult
from tools.catalog import Call

if TYPE_CHECKING:
    from graph.nodes import Branch, Nodes


async def follow_up(nodes: Nodes, branch: Branch, call: Call) -> CheckReport | None:
    """The check of ``call``'s action after it ran (None when the action declares none)."""
    from graph.nodes import asked_by, emit, task_of

    check = nodes.deps.catalog.resolve(call).action.check
    if check is None:
        return None
    probe = probe_call(nodes, call, check)
    requester, channel = asked_by(task_of(branch))
    review = nodes.review(probe, requester, channel, Proposer.MODEL)
    await nodes.deps.audit.record(
        "policy", branch["run_id"], call_id=probe.id, verdict=review["verdict"],
        tier=review["tier"], rule=review["rule"], reason=review["reason"],
        action=review.get("canonical"), hash=review.get("hash"), check_of=call.id)
    if review["verdict"] != Verdict.ALLOW:
        return CheckReport(invocation=probe.ref, expect=check.expect,
                           note=f"not run: {review['reason']}")
    step = {"step": probe.id, "text": f"After acting: {review['summary']}"}
    emit({**step, "state": StepState.RUNNING})
    result = await nodes._run_sandboxed(branch, nodes.deps.catalog.resolve(probe))
    report = CheckReport(invocation=result.invocation, expect=check.expect,
                         held=held(check, result), evidence=result.text)
    emit({**step, "state": StepState.OK if report.held else StepState.FAILED,
          "detail": report.verdict})
    return report


def probe_call(nodes: Nodes, call: Call, check: Check[Any]) -> Call:
    params = check.params(nodes.deps.catalog.resolve(call).params)
    return Call(id=f"{call.id}.check", toolset=call.toolset, action=check.action, params=params)


def held(check: Check[Any], result: ToolResult) -> bool | None:
    """``fixed(result)`` for a check that answered; None for one that failed or was refused."""
    if result.status not in (Status.OK, Status.NO_DATA):
        return None
    try:
        return bool(check.fixed(result))
    except (KeyError, TypeError, ValueError, AttributeError):  # data not shaped as declared
        return None
