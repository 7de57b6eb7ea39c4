"""The approval desk: where a paused run's approval requests live until someone decides.

The driver hands it each pending interrupt (``ask``); the desk turns it into an approval
request (idempotent per interrupt id) and posts the card. Clicks, closes and expiry are each
one transaction: the compare-and-set, its audit rows and — once a request is decided — the job
that resumes the run commit together, so a decided approval always resumes, on whichever
worker, after whatever crash. The card is updated after the commit.

Button values are untrusted: a click only counts if the approval exists, belongs to the channel
and card it was clicked on, and carries the hash of the exact action the card showed. Every
refused click is an audit row (``approval.rejected``), with its run when there is one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from approvals.models import ApprovalRequest, ApprovalStatus
from approvals.rules import ApproverRule
from approvals.store import VoteOutcome
from graph import metrics
from graph.commands import clean
from graph.queue import Job, JobKind, JobQueue, lane_for
from graph.records import Records, Tx
from graph.surface import RunRef, Surface
from graph.task import Task

log = structlog.get_logger("opsbot.desk")
MISMATCH = "That button does not match its approval request; nothing was changed."


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
    def __init__(self, records: Records, queue: JobQueue, surface: Surface,
                 clock: Callable[[], datetime]):
        self.records = records
        self.queue = queue
        self.surface = surface
        self.clock = clock

    @property
    def approvals(self):
        return self.records.approvals

    async def ask(self, tx: Tx, run: RunRef, interrupt_id: str,
                  value: dict[str, Any]) -> ApprovalRequest:
        """The request for this interrupt (created once, inside ``tx``, with its audit row: no
        vote can precede it); ``show`` posts its card once ``tx`` has committed."""
        request = await tx.approvals.create(self._request(run, interrupt_id, value))
        await tx.audit.record(
            "approval.request", run.run_id, run.task.user, approval=request.id,
            action=request.canonical, hash=request.action_hash,
            approvers=request.rule.model_dump(mode="json"),
            expires_at=request.expires_at.isoformat())
        tx.after_commit(lambda: metrics.APPROVALS_REQUESTED.labels(str(request.tier)).inc())
        return request

    async def show(self, run: RunRef, request: ApprovalRequest) -> None:
        """Post the card of a pending request that has none yet (exactly once)."""
        if request.card_ts is None and request.status is ApprovalStatus.PENDING:
            await self._post(run, request)

    async def click(self, click: Click) -> str:
        """Record an Approve/Deny click; returns the sentence for the clicker."""
        async with self.records.transaction() as tx:
            request = await _locked(tx, click.approval_id)
            problem = _tampered(request, click)
            if problem:
                await _refused(tx, request, click, problem)
                return problem
            outcome = await tx.approvals.vote(click.approval_id, click.user, click.groups,
                                              click.approve, self.clock(), click.reason)
            run = await self._record_vote(tx, outcome, click)
        if run is not None and outcome.request is not None and (outcome.accepted or outcome.decided):
            await self.surface.update_approval(run, outcome.request)
        return outcome.message

    async def refuse(self, approval_id: str | None, user: str, problem: str, **detail: Any) -> None:
        """Record a click refused before it reached the desk (e.g. a button value that is not
        JSON): an auditor finds every refusal."""
        request = await self.records.approvals.get(approval_id) if approval_id else None
        await self.records.audit.record("approval.rejected", request.run_id if request else None,
                                        user, approval=approval_id, reason=problem, **detail)

    async def pending(self, run_id: str) -> list[ApprovalRequest]:
        return [a for a in await self.records.approvals.for_run(run_id) if not a.status.final]

    async def may_decide(self, run_id: str, user: str, groups: frozenset[str]) -> bool:
        return any(_is_approver(a.rule, user, groups) for a in await self.pending(run_id))

    async def close_in(self, tx: Tx, run: RunRef, requests: list[ApprovalRequest],
                       status: ApprovalStatus) -> list[ApprovalRequest]:
        """Close these pending requests inside ``tx``; each closed one gets its resume job.
        Update the cards (``update_cards``) once ``tx`` has committed."""
        closed = []
        for request in requests:
            done = await tx.approvals.close(request.id, status, self.clock())
            if done is None:
                continue
            await tx.audit.record("approval.decision", run.run_id, None, approval=done.id,
                                  status=status.value)
            await self._resume(tx, run, done)
            closed.append(done)
            tx.after_commit(lambda done=done: metrics.approval_decided(done, self.clock()))
        return closed

    async def update_cards(self, run: RunRef, requests: list[ApprovalRequest]) -> None:
        for request in requests:
            await self.surface.update_approval(run, request)

    async def sweep(self) -> int:
        """Expire pending approvals past their expiry; update cards and end the waits."""
        now, count = self.clock(), 0
        for request in await self.records.approvals.pending():
            if not request.expired(now):
                continue
            found = await self.records.runs.get(request.run_id)
            if found is None:
                continue
            async with self.records.transaction() as tx:
                await tx.runs.row(request.run_id, lock=True)  # lock order: run, then approvals
                closed = await self.close_in(tx, found[0], [request], ApprovalStatus.EXPIRED)
            await self.update_cards(found[0], closed)
            count += len(closed)
        return count

    async def _record_vote(self, tx: Tx, outcome: VoteOutcome, click: Click) -> RunRef | None:
        request = outcome.request
        if request is None:
            return None
        run_id = request.run_id
        if not (outcome.accepted or outcome.decided):
            if not request.status.final:  # not allowed to decide: an auditor wants to know
                await _refused(tx, request, click, outcome.message)
            return None
        found = await tx.runs.get(run_id)
        if outcome.accepted:
            await tx.audit.record("approval.vote", run_id, click.user, approval=request.id,
                                  approve=click.approve, reason=click.reason)
        if outcome.decided:
            await tx.audit.record("approval.decision", run_id, click.user, approval=request.id,
                                  status=request.status.value, by=request.deciders,
                                  hash=request.action_hash)
            if found is not None:
                await self._resume(tx, found[0], request)
            tx.after_commit(lambda: metrics.approval_decided(request, self.clock()))
        return found[0] if found else None

    async def _resume(self, tx: Tx, run: RunRef, request: ApprovalRequest) -> None:
        await self.queue.defer(tx, Job(JobKind.RESUME, run.run_id, run.thread_id,
                                       lane_for(run.task), approval_id=request.id,
                                       trace=run.trace))

    async def _post(self, run: RunRef, request: ApprovalRequest) -> None:
        """Post the card and record where it is. A click can land between the two (the card is
        visible before its ts is recorded): its vote could not edit the card, so the card is
        redrawn here when anything was voted or decided meanwhile."""
        card_ts = await self.surface.ask_approval(run, request)
        if not card_ts:
            return
        await self.records.approvals.set_card(request.id, card_ts)
        current = await self.records.approvals.get(request.id)
        if current is not None and (current.votes or current.status.final):
            await self.surface.update_approval(run, current)

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


async def _locked(tx: Tx, approval_id: str) -> ApprovalRequest | None:
    """The approval, locked for this transaction — after its run's row, the order every
    transaction that touches both follows (a cancel locks the run, then its approvals)."""
    request = await tx.approvals.get(approval_id)
    if request is None:
        return None
    await tx.runs.row(request.run_id, lock=True)
    return await tx.approvals.get(approval_id, lock=True)


async def _refused(tx: Tx, request: ApprovalRequest | None, click: Click, problem: str) -> None:
    await tx.audit.record("approval.rejected", request.run_id if request else None, click.user,
                          approval=click.approval_id, approve=click.approve, reason=problem,
                          channel=click.channel)


def _tampered(request: ApprovalRequest | None, click: Click) -> str:
    if request is None:
        return "That approval request does not exist; nothing was changed."
    if request.channel != click.channel or request.action_hash != click.shown_hash:
        return MISMATCH
    if not click.message_ts:  # Slack names the message of every button it delivers
        return MISMATCH
    if request.card_ts and click.message_ts != request.card_ts:  # else: the card is being posted
        return MISMATCH
    return ""


def _is_approver(rule: ApproverRule, user: str, groups: frozenset[str]) -> bool:
    return user in rule.users or bool(groups & set(rule.groups))


def _reason(task: Task, review: dict[str, Any]) -> str:
    why = review.get("reason", "")
    if task.alert is not None:
        return f"Proposed while investigating {task.alert.origin} incident {task.alert.id}. {why}"
    if task.text:  # no backtick may close the code span early (the card shows the rest)
        return f"Requested with `{clean(task.text)[:300].replace('`', 'ˋ')}`. {why}"
    return why
