"""Policy: may this requester run this concrete action here, and who must approve it?

``evaluate`` is a pure function (no I/O) of the policy, the catalog, the proposed call, the
requester and the channel. It never looks at the prompt or alert text, only at the concrete
action, so untrusted text can never lower a tier or skip a gate.

(First version: a default policy plus a flat approver list. The full rule language lives in the
policy-engine issue.)
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from approvals.rules import ApproverRule
from tools.base import Tier
from tools.catalog import Call, CallError, Catalog


class PolicyError(ValueError):
    """The policy file is invalid; ``str(e)`` names the file, line and fix."""


class Requester(BaseModel):
    model_config = ConfigDict(frozen=True)

    user: str
    groups: frozenset[str] = frozenset()


class Channel(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str = ""
    is_dm: bool = False


class Verdict(StrEnum):
    ALLOW = "allow"
    APPROVE = "approve"
    DENY = "deny"


class Decision(BaseModel):
    """The verdict on one call plus everything the approval step needs."""

    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    tier: Tier
    rule: str
    reason: str
    approval: ApproverRule | None = None  # set when verdict is APPROVE
    expires_in_s: int = 3600


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approvers: ApproverRule = ApproverRule()
    autonomous_max_tier: Tier = Tier.DRAFT
    expiry_s: dict[int, int] = Field(default_factory=lambda: {3: 3600, 4: 1800})
    incident_channels: tuple[str, ...] = ()


def load_policy(path: str | Path) -> Policy:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise PolicyError(f"{path}: cannot read the policy file: {e}") from None
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        raise PolicyError(f"{path}: {e.errors()[0]['msg']}") from None


def evaluate(
    policy: Policy, catalog: Catalog, call: Call, requester: Requester, channel: Channel
) -> Decision:
    try:
        resolved = catalog.resolve(call)
    except CallError as e:
        return Decision(verdict=Verdict.DENY, tier=Tier.PRODUCTION, rule="catalog", reason=str(e))
    tier = resolved.tier
    if tier <= policy.autonomous_max_tier:
        return Decision(
            verdict=Verdict.ALLOW, tier=tier, rule="default", reason=f"Tier {tier.label} runs."
        )
    if not (policy.approvers.users or policy.approvers.groups):
        return Decision(
            verdict=Verdict.DENY,
            tier=tier,
            rule="default",
            reason=f"`{call.ref}` is tier {tier.label} and needs approval, but the policy names "
            "no approvers.",
        )
    return Decision(
        verdict=Verdict.APPROVE,
        tier=tier,
        rule="default",
        reason=f"`{call.ref}` is tier {tier.label}: it needs approval.",
        approval=policy.approvers.model_copy(
            update={"requester_may_approve": tier < Tier.PRODUCTION}
        ),
        expires_in_s=policy.expiry_s.get(int(tier), 3600),
    )
