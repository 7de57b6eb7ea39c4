"""Approval requests in SQLite, with compare-and-set transitions.

Every change is ``UPDATE ... WHERE id = ? AND version = ?``: when two clicks (or two processes)
race, exactly one write lands; the loser re-reads and sees the decided request. ``vote`` is the
single entry point for clicks and returns a :class:`VoteOutcome` whose ``message`` is the
sentence to show the clicker.

Usage::

    store = ApprovalStore(db)
    store.create(request)
    outcome = store.vote(request.id, user="U2", groups=frozenset(), approve=True, now=now)
    if outcome.decided: ...resume the run...
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import sqlite_utils

from approvals.models import ApprovalRequest, ApprovalStatus, Vote
from approvals.rules import refusal

TABLE = "approvals"
_MAX_CAS_ATTEMPTS = 20


@dataclass(frozen=True)
class VoteOutcome:
    request: ApprovalRequest | None
    accepted: bool  # the vote was recorded
    decided: bool  # this vote moved the request to a final status
    message: str  # what the clicker is told


class ApprovalStore:
    def __init__(self, db: sqlite_utils.Database):
        self.db = db
        if TABLE not in db.table_names():
            db[TABLE].create(
                {"id": str, "run_id": str, "thread_id": str, "status": str, "version": int,
                 "expires_at": str, "body": str},
                pk="id",
            )
            db[TABLE].create_index(["run_id"])
            db[TABLE].create_index(["status"])

    def create(self, request: ApprovalRequest) -> ApprovalRequest:
        """Insert once; creating an existing id returns the stored request unchanged."""
        existing = self.get(request.id)
        if existing is not None:
            return existing
        self.db[TABLE].insert(self._row(request), ignore=True)
        return self.get(request.id) or request

    def get(self, approval_id: str) -> ApprovalRequest | None:
        rows = list(self.db.query(f"select body from {TABLE} where id = ?", [approval_id]))
        return ApprovalRequest.model_validate_json(rows[0]["body"]) if rows else None

    def for_run(self, run_id: str) -> list[ApprovalRequest]:
        rows = self.db.query(
            f"select body from {TABLE} where run_id = ? order by rowid", [run_id]
        )
        return [ApprovalRequest.model_validate_json(r["body"]) for r in rows]

    def pending(self) -> list[ApprovalRequest]:
        rows = self.db.query(f"select body from {TABLE} where status = 'pending' order by rowid")
        return [ApprovalRequest.model_validate_json(r["body"]) for r in rows]

    def set_card(self, approval_id: str, card_ts: str) -> None:
        self._update(approval_id, lambda r: r.model_copy(update={"card_ts": card_ts}))

    def vote(
        self,
        approval_id: str,
        user: str,
        groups: frozenset[str],
        approve: bool,
        now: datetime,
        reason: str = "",
    ) -> VoteOutcome:
        for _ in range(_MAX_CAS_ATTEMPTS):
            request = self.get(approval_id)
            if request is None:
                return VoteOutcome(None, False, False, "that approval request does not exist.")
            outcome = _apply_vote(request, user, groups, approve, now, reason)
            if outcome.request is request:  # nothing to write
                return outcome
            if self._cas(request, outcome.request):
                return outcome
        return VoteOutcome(None, False, False, "too many simultaneous clicks; try again.")

    def close(self, approval_id: str, status: ApprovalStatus, now: datetime) -> ApprovalRequest | None:
        """Move a pending request to expired/cancelled. None when it was already final."""
        def change(r: ApprovalRequest) -> ApprovalRequest | None:
            if r.status.final:
                return None
            return r.model_copy(update={"status": status, "decided_at": now})

        return self._update(approval_id, change)

    def _update(self, approval_id: str, change) -> ApprovalRequest | None:
        for _ in range(_MAX_CAS_ATTEMPTS):
            request = self.get(approval_id)
            if request is None:
                return None
            updated = change(request)
            if updated is None:
                return None
            if self._cas(request, updated):
                return updated.model_copy(update={"version": request.version + 1})
        raise RuntimeError(f"approval {approval_id}: compare-and-set kept failing")

    def _cas(self, old: ApprovalRequest, new: ApprovalRequest) -> bool:
        new = new.model_copy(update={"version": old.version + 1})
        row = self._row(new)
        cursor = self.db.execute(
            f"update {TABLE} set status = ?, version = ?, body = ? where id = ? and version = ?",
            [row["status"], row["version"], row["body"], old.id, old.version],
        )
        return cursor.rowcount == 1

    @staticmethod
    def _row(request: ApprovalRequest) -> dict:
        return {
            "id": request.id,
            "run_id": request.run_id,
            "thread_id": request.thread_id,
            "status": request.status.value,
            "version": request.version,
            "expires_at": request.expires_at.isoformat(),
            "body": json.dumps(request.model_dump(mode="json")),
        }


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
