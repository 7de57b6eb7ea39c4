"""The approval desk: where a paused run's approval requests live until someone decides.

The run manager hands it each pending interrupt (``ask``); the desk turns it into an approval
request (idempotent per interrupt id), posts the card, records clicks through the store's
compare-and-set, keeps cards up to date, expires what is left too long, and — once a request is
decided — asks the manager to resume the run with that decision (``resume`` callback).

Button values are untrusted: a click only counts if the approval exists, belongs to the channel
and card it was clicked on, and carries the hash of the exact action the card showed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from approvals.models import ApprovalRequest, ApprovalStatus
from approvals.rules import ApproverRule
from approvals.store import ApprovalStore, VoteOutcome
from graph.audit import AuditLog
from graph.commands import clean
from graph.store import RunStore
from graph.surface import RunRef, Surface
from graph.task import Task

log = structlog.get_logger("opsbot.desk")
Resume = Callable[[RunRef, ApprovalRequest], None]


@dataclass(frozen=True)
class Click:
    """An Approve/Deny click as the surface saw it (values are untrusted)."""

    approval_id: str
    shown_hash: str
    user: str
    groups: frozenset[str]
    approve: bool
    channel: str
    message_ts: str | None
    reason: str = ""


class ApprovalDesk:
    def __init__(self, approvals: ApprovalStore, runs: RunStore, audit: AuditLog,
                 surface: Surface, clock: Callable[[], datetime], resume: Resume):
        self.approvals = approvals
        self.runs = runs
        self.audit = audit
        self.surface = surface
        self.clock = clock
        self.resume = resume

    async def ask(self, run: RunRef, interrupt_id: str, value: dict[str, Any]) -> ApprovalRequest:
        """The request for this interrupt, with its card posted exactly once."""
        request = self.approvals.create(self._request(run, interrupt_id, value))
        if request.card_ts is None and request.status is ApprovalStatus.PENDING:
            await self._post(run, request)
        return request

    async def click(self, click: Click) -> str:
        """Record an Approve/Deny click; returns the sentence for the clicker."""
        request = self.approvals.get(click.approval_id)
        problem = _tampered(request, click)
        if problem:
            self.audit.record("approval.rejected", request.run_id if request else None,
                              click.user, approval=click.approval_id, reason=problem)
            return problem
        outcome = self.approvals.vote(click.approval_id, click.user, click.groups, click.approve,
                                      self.clock(), click.reason)
        await self._after_vote(outcome, click)
        return outcome.message

    def pending(self, run_id: str) -> list[ApprovalRequest]:
        return [a for a in self.approvals.for_run(run_id) if not a.status.final]

    def may_decide(self, run_id: str, user: str, groups: frozenset[str]) -> bool:
        rules = (a.rule for a in self.pending(run_id))
        return any(_is_approver(rule, user, groups) for rule in rules)

    async def close_run(self, run_id: str, status: ApprovalStatus) -> int:
        """Close every pending request of a run (cancel, incident resolved)."""
        return sum([await self.close(r, status) for r in self.pending(run_id)])

    async def close(self, request: ApprovalRequest, status: ApprovalStatus) -> int:
        closed = self.approvals.close(request.id, status, self.clock())
        if closed is None:
            return 0
        found = self.runs.get(closed.run_id)
        if found is None:
            return 1
        run, _ = found
        self.audit.record("approval.decision", run.run_id, None, approval=closed.id,
                          status=status.value)
        await self.surface.update_approval(run, closed)
        self.resume(run, closed)
        return 1

    async def sweep(self) -> int:
        """Expire pending approvals past their expiry; update cards and end the waits."""
        now, count = self.clock(), 0
        for request in self.approvals.pending():
            if request.expired(now):
                count += await self.close(request, ApprovalStatus.EXPIRED)
        return count

    async def sweeper(self, every_s: float = 30) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - the next sweep tries again
                log.exception("approval sweep failed")

    async def _post(self, run: RunRef, request: ApprovalRequest) -> None:
        card_ts = await self.surface.ask_approval(run, request)
        if card_ts:
            self.approvals.set_card(request.id, card_ts)
            current = self.approvals.get(request.id)
            if current is not None and current.status.final:  # decided while posting
                await self.surface.update_approval(run, current)
        self.audit.record("approval.request", run.run_id, run.task.user, approval=request.id,
                          action=request.canonical, hash=request.action_hash,
                          approvers=request.rule.model_dump(mode="json"),
                          expires_at=request.expires_at.isoformat())

    def _request(self, run: RunRef, interrupt_id: str, value: dict[str, Any]) -> ApprovalRequest:
        review, call = value["review"], value["call"]
        now = self.clock()
        return ApprovalRequest(
            id="a-" + hashlib.sha256(f"{run.thread_id}|{interrupt_id}".encode()).hexdigest()[:12],
            run_id=run.run_id, thread_id=run.thread_id, call_id=call["id"],
            interrupt_id=interrupt_id, action_hash=review["hash"], canonical=review["canonical"],
            summary=review["summary"], target=review["target"], tier=review["tier"],
            requester=run.task.user, reason=_reason(run.task, review),
            preview=review.get("preview"), rule=ApproverRule.model_validate(review["approval"]),
            policy_rule=review["rule"], channel=run.task.channel, thread_ts=run.thread_ts or "",
            created_at=now, expires_at=now + timedelta(seconds=review["expires_in_s"]),
        )

    async def _after_vote(self, outcome: VoteOutcome, click: Click) -> None:
        request = outcome.request
        if request is None or not (outcome.accepted or outcome.decided):
            return
        found = self.runs.get(request.run_id)
        if found is None:
            return
        run, _ = found
        if outcome.accepted:
            self.audit.record("approval.vote", run.run_id, click.user, approval=request.id,
                              approve=click.approve, reason=click.reason)
        await self.surface.update_approval(run, request)
        if outcome.decided:
            self.audit.record("approval.decision", run.run_id, click.user, approval=request.id,
                              status=request.status.value, by=request.deciders,
                              hash=request.action_hash)
            self.resume(run, request)


def _tampered(request: ApprovalRequest | None, click: Click) -> str:
    if request is None:
        return "That approval request does not exist; nothing was changed."
    if request.channel != click.channel or request.action_hash != click.shown_hash:
        return "That button does not match its approval request; nothing was changed."
    if request.card_ts and click.message_ts and click.message_ts != request.card_ts:
        return "That button does not match its approval request; nothing was changed."
    return ""


def _is_approver(rule: ApproverRule, user: str, groups: frozenset[str]) -> bool:
    return user in rule.users or bool(groups & set(rule.groups))


def _reason(task: Task, review: dict[str, Any]) -> str:
    why = review.get("reason", "")
    if task.alert is not None:
        return f"Proposed while investigating PagerDuty incident {task.alert.id}. {why}"
    if task.text:  # no backtick may close the code span early (the card shows the rest)
        return f"Requested with `{clean(task.text)[:300].replace('`', 'ˋ')}`. {why}"
    return why
