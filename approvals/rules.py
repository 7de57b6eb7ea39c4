"""Who may decide an approval: pure checks, no I/O.

An :class:`ApproverRule` is copied from the policy decision into the approval request when the
request is created, so later policy edits never change who may decide a pending request.
``refusal`` returns the sentence shown to someone who may not approve, ``rejection_refusal``
the one shown to someone who may not deny, and ``remaining`` how many approvals are still
missing (the two-person rule needs ``required`` *distinct* approvers).

Usage::

    rule = ApproverRule(users=("U1", "U2"), groups=("S0SRE",), required=2,
                        requester_may_approve=False)
    refusal(rule, requester="U1", clicker="U1", clicker_groups=frozenset())
    # 'you requested this action, and its tier needs someone else to approve it.'
    remaining(rule, frozenset({"U2"}))   # 1
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ApproverRule(BaseModel):
    """Slack user ids and Slack user-group ids who may approve, and how many must."""

    model_config = ConfigDict(frozen=True)

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    required: int = Field(1, ge=1)
    requester_may_approve: bool = True

    def describe(self) -> str:
        """Slack mrkdwn naming the approvers, e.g. ``2 of <@U1>, <!subteam^S0SRE>``."""
        names = self.people() or "nobody"
        return names if self.required == 1 else f"{self.required} of {names}"

    def people(self) -> str:
        """The approvers as Slack mentions, comma-separated; empty when there are none."""
        who = [f"<@{u}>" for u in self.users] + [f"<!subteam^{g}>" for g in self.groups]
        return ", ".join(who)

    def includes(self, user: str, user_groups: frozenset[str]) -> bool:
        """Whether ``user`` is named directly or belongs to one of the Slack user groups."""
        return user in self.users or bool(user_groups & set(self.groups))


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
    if not rule.includes(clicker, clicker_groups):
        return f"you are not one of its approvers ({rule.describe()})."
    return None


def rejection_refusal(
    rule: ApproverRule, requester: str, clicker: str, clicker_groups: frozenset[str]
) -> str | None:
    """Why ``clicker`` may not deny, or None: approvers may deny, and a requester may withdraw."""
    if clicker == requester or rule.includes(clicker, clicker_groups):
        return None
    return f"only its approvers ({rule.describe()}) or the requester can deny it."


def remaining(rule: ApproverRule, approved_by: frozenset[str]) -> int:
    """How many more distinct approvals are needed before the action may run."""
    return max(0, rule.required - len(approved_by))
