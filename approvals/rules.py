"""Who may decide an approval: pure checks, no I/O.

An :class:`ApproverRule` is copied from the policy decision into the approval request when the
request is created, so later policy edits never change who may decide a pending request.
``refusal`` returns the sentence shown to someone who may not decide, or None.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ApproverRule(BaseModel):
    model_config = ConfigDict(frozen=True)

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    required: int = 1
    requester_may_approve: bool = True

    def describe(self) -> str:
        who = [f"<@{u}>" for u in self.users] + [f"<!subteam^{g}>" for g in self.groups]
        names = ", ".join(who) or "nobody"
        return names if self.required == 1 else f"{self.required} of {names}"


def refusal(
    rule: ApproverRule,
    requester: str,
    clicker: str,
    clicker_groups: frozenset[str],
    already_approved_by: frozenset[str] = frozenset(),
) -> str | None:
    """Why ``clicker`` may not approve, or None when they may."""
    if clicker == requester and not rule.requester_may_approve:
        return "you requested this action, and its tier needs someone else to approve it."
    if clicker in already_approved_by:
        return "you already approved it; it needs a different approver."
    if clicker not in rule.users and not (clicker_groups & set(rule.groups)):
        return f"you are not one of its approvers ({rule.describe()})."
    return None
