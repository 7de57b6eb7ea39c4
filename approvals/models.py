"""Approval requests: one per gated action, bound to the hash of that exact action.

Status machine::

    pending ──► approved      (k of N distinct authorised approvals)
        │──────► denied        (any authorised approver denies)
        │──────► expired       (clicked or swept after expires_at)
        └──────► cancelled     (run cancelled)

Transitions happen only by compare-and-set in :mod:`approvals.store`; a decided request never
changes again.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from approvals.rules import ApproverRule


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self is not ApprovalStatus.PENDING


class Vote(BaseModel):
    model_config = ConfigDict(frozen=True)

    user: str
    approve: bool
    at: datetime
    reason: str = ""


class ApprovalRequest(BaseModel):
    """Everything an approver sees and everything needed to check a click."""

    id: str
    run_id: str
    thread_id: str
    call_id: str
    interrupt_id: str
    action_hash: str
    canonical: dict[str, Any]
    summary: str
    target: str
    tier: int
    requester: str
    reason: str
    preview: str | None = None
    rule: ApproverRule
    policy_rule: str = "default"
    channel: str
    thread_ts: str
    card_ts: str | None = None
    created_at: datetime
    expires_at: datetime
    status: ApprovalStatus = ApprovalStatus.PENDING
    votes: list[Vote] = Field(default_factory=list)
    decided_at: datetime | None = None
    version: int = 0

    @property
    def approvals(self) -> list[Vote]:
        return [v for v in self.votes if v.approve]

    @property
    def deciders(self) -> list[str]:
        if self.status is ApprovalStatus.APPROVED:
            return [v.user for v in self.approvals]
        return [v.user for v in self.votes if not v.approve][-1:]

    @property
    def denial_reason(self) -> str:
        denials = [v for v in self.votes if not v.approve]
        return denials[-1].reason if denials else ""

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at
