"""Approval requests with compare-and-set transitions, over either storage mode's rows.

Every change is ``UPDATE ... WHERE id = ? AND version = ?``: when two clicks (or two processes)
race, exactly one write lands; the loser re-reads and sees the decided request. Inside a
transaction the row is read with a lock (PostgreSQL ``FOR UPDATE``; SQLite transactions are
exclusive), so the vote, its audit row and the resume job commit together. ``vote`` is the
single entry point for clicks and returns a :class:`VoteOutcome` whose ``message`` is the
sentence to show the clicker.

The rows themselves live in the deployment's database (``graph/records``); this module holds
the logic both modes share.

Usage::

    store = ApprovalStore(rows)
    await store.create(request)
    outcome = await store.vote(request.id, user="U2", groups=frozenset(), approve=True, now=now)
    if outcome.decided: ...resume the run...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from approvals.models import ApprovalRequest, ApprovalStatus, Vote
from approvals.rules import refusal

_MAX_CAS_ATTEMPTS = 20


@dataclass(frozen=True)
class VoteOutcome:
    request: ApprovalRequest | None
    accepted: bool  # the vote was recorded
    decided: bool  # this vote moved the request to a final status
    message: str  # what the clicker is told


class ApprovalRows(ABC):
    """Where approval requests are kept (one backend per storage mode)."""

    @abstractmethod
    async def insert(self, request: ApprovalRequest) -> None:
        """Insert once; inserting an existing id changes nothing."""

    @abstractmethod
    async def get(self, approval_id: str, lock: bool = False) -> ApprovalRequest | None: ...

    @abstractmethod
    async def for_run(self, run_id: str, lock: bool = False) -> list[ApprovalRequest]: ...

    @abstractmethod
    async def pending(self) -> list[ApprovalRequest]: ...

    @abstractmethod
    async def cas(self, old: ApprovalRequest, new: ApprovalRequest) -> bool:
        """Write ``new`` (with ``old.version + 1``) only if the row is still at ``old.version``."""


class ApprovalStore:
    def __init__(self, rows: ApprovalRows):
        self.rows = rows

    async def create(self, request: ApprovalRequest) -> ApprovalRequest:
        """Insert once; creating an existing id returns the stored request unchanged."""
        await self.rows.insert(request)
        return await self.rows.get(request.id) or request

    async def get(self, approval_id: str, lock: bool = False) -> ApprovalRequest | None:
        return await self.rows.get(approval_id, lock)

    async def for_run(self, run_id: str, lock: bool = False) -> list[ApprovalRequest]:
        return await self.rows.for_run(run_id, lock)

    async def pending(self) -> list[ApprovalRequest]:
        return await self.rows.pending()

    async def set_card(self, approval_id: str, card_ts: str) -> None:
        await self._update(approval_id, lambda r: r.model_copy(update={"card_ts": card_ts}))

    async def vote(
        self,
        approval_id: str,
        user: str,
        groups: frozenset[str],
        approve: bool,
        now: datetime,
        reason: str = "",
    ) -> VoteOutcome:
        for _ in range(_MAX_CAS_ATTEMPTS):
            request = await self.rows.get(approval_id, lock=True)
            if request is None:
                return VoteOutcome(None, False, False, "that approval request does not exist.")
            outcome = _apply_vote(request, user, groups, approve, now, reason)
            if outcome.request is request:  # nothing to write
                return outcome
            if await self.rows.cas(request, outcome.request):
                return _bumped(outcome, request)
        return VoteOutcome(None, False, False, "too many simultaneous clicks; try again.")

    async def close(self, approval_id: str, status: ApprovalStatus,
                    now: datetime) -> ApprovalRequest | None:
        """Move a pending request to expired/cancelled. None when it was already final."""
        def change(r: ApprovalRequest) -> ApprovalRequest | None:
            if r.status.final:
                return None
            return r.model_copy(update={"status": status, "decided_at": now})

        return await self._update(approval_id, change)

    async def _update(self, approval_id: str,
                      change: Callable[[ApprovalRequest], ApprovalRequest | None]
                      ) -> ApprovalRequest | None:
        for _ in range(_MAX_CAS_ATTEMPTS):
            request = await self.rows.get(approval_id, lock=True)
            if request is None:
                return None
            updated = change(request)
            if updated is None:
                return None
            if await self.rows.cas(request, updated):
                return updated.model_copy(update={"version": request.version + 1})
        raise RuntimeError(f"approval {approval_id}: compare-and-set kept failing")


def _bumped(outcome: VoteOutcome, old: ApprovalRequest) -> VoteOutcome:
    assert outcome.request is not None
    written = outcome.request.model_copy(update={"version": old.version + 1})
    return VoteOutcome(written, outcome.accepted, outcome.decided, outcome.message)


def _apply_vote(
    request: ApprovalRequest,
    user: str,
    groups: frozenset[str],
    approve: bool,
    now: datetime,
    reason: str,
) -> VoteOutcome:
    """Pure: the request after this vote (or the same object when nothing changes)."""
    if request.status.final:
        return VoteOutcome(request, False, False, _already(request))
    if request.expired(now):
        expired = request.model_copy(update={"status": ApprovalStatus.EXPIRED, "decided_at": now})
        return VoteOutcome(expired, False, True, "this approval request has expired.")
    approved_by = frozenset(v.user for v in request.approvals)
    why_not = _why_not(request, user, groups, approve, approved_by)
    if why_not:
        verb = "approve" if approve else "deny"
        return VoteOutcome(request, False, False, f"you can't {verb} this: {why_not}")
    votes = [*request.votes, Vote(user=user, approve=approve, at=now, reason=reason)]
    status = ApprovalStatus.PENDING
    if not approve:
        status = ApprovalStatus.DENIED
    elif len(approved_by | {user}) >= request.rule.required:
        status = ApprovalStatus.APPROVED
    updated = request.model_copy(
        update={"votes": votes, "status": status, "decided_at": now if status.final else None}
    )
    if status is ApprovalStatus.PENDING:
        have = len(approved_by) + 1
        return VoteOutcome(updated, True, False, f"approval {have} of {request.rule.required} recorded.")
    return VoteOutcome(updated, True, True, f"{status.value}.")


def _why_not(
    request: ApprovalRequest,
    user: str,
    groups: frozenset[str],
    approve: bool,
    approved_by: frozenset[str],
) -> str | None:
    """Approving follows the approver rule; denying is open to approvers and the requester."""
    if approve:
        return refusal(request.rule, request.requester, user, groups, approved_by)
    rule = request.rule
    if user == request.requester or user in rule.users or groups & set(rule.groups):
        return None
    return f"you are not one of its approvers ({rule.describe()})."


def _already(request: ApprovalRequest) -> str:
    who = ", ".join(f"<@{u}>" for u in request.deciders)
    if request.status in (ApprovalStatus.APPROVED, ApprovalStatus.DENIED):
        return f"this was already {request.status.value} by {who}."
    return f"this approval request is already {request.status.value}."
