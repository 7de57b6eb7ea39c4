"""Policy: may this requester run this concrete action here, and who must approve it?

``evaluate`` is a pure function (no I/O) of the policy, the catalog, the proposed call, the
requester and the channel. It never looks at the prompt or alert text, only at the concrete
action, so untrusted text can never lower a tier or skip a gate. Its steps, in order:

1. the catalog resolves the call (unknown toolset/action or bad params: deny);
2. the first rule whose ``match`` fits the action and its target decides: a ``deny`` rule denies
   outright (no approval can override it); otherwise the rule may raise the tier (never lower
   it below the action's own) and set approvers, approvals, expiry and requesters;
3. who may request: the rule's ``requesters`` or the policy's;
4. the first matching ``channels`` entry may deny high tiers there (``deny_from_tier``) and may
   cap autonomy there (``autonomous_max_tier``; a channel can only be stricter); a call no
   person typed (the model's, an alert run's, an MCP client's) is capped at
   ``llm_autonomous_max_tier`` (default 0: the model runs only read-only actions on its own);
5. tiers at or below the autonomy limit run; above it they need approval from the approvers,
   ``required`` distinct people, never the requester at tier 4; with nobody to ask: deny.

Usage (``load_policy`` is in :mod:`graph.policy.load`)::

    policy = load_policy(settings.policy_path)          # boot: PolicyError lists file:line
    decision = evaluate(policy, catalog, call, Requester(user="U1"), Channel(id="C1"))
    decision.verdict, decision.reason                    # Verdict.APPROVE, "`redis del` ..."

With no policy file, ``Policy()`` is the safe default: tiers 0-2 run, tiers 3-4 are denied
with a sentence saying no approvers are configured and how to fix that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ConfigDict

from approvals.rules import ApproverRule
from graph.policy.model import (
    DEFAULT_EXPIRY_S,
    Channel,
    ChannelRule,
    Policy,
    Proposer,
    Requester,
    Rule,
)
from graph.policy.schema import format_duration
from tools.base import Tier
from tools.catalog import Call, CallError, Catalog, Resolved

class Verdict(StrEnum):
    ALLOW = "allow"
    APPROVE = "approve"
    DENY = "deny"


class Decision(BaseModel):
    """The verdict on one call plus everything the approval step needs.

    ``rule`` names what decided: a policy rule's name, ``default`` (no rule matched),
    ``catalog`` (the call itself is invalid), ``requesters`` or ``channel <pattern>``.
    ``reason`` is the sentence the user sees.
    """

    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    tier: Tier
    rule: str
    reason: str
    approval: ApproverRule | None = None  # set when verdict is APPROVE
    expires_in_s: int = DEFAULT_EXPIRY_S
    base_tier: Tier | None = None  # the action's own tier; None when the call didn't resolve
    channel_rule: str | None = None  # the `channels` entry that applied, if any


@dataclass(frozen=True)
class _Case:
    """One evaluation in progress: the resolved call and what the policy said so far."""

    policy: Policy
    resolved: Resolved
    requester: Requester
    channel: Channel
    rule: Rule | None
    tier: Tier
    place: ChannelRule | None
    proposer: Proposer

    @property
    def ref(self) -> str:
        return f"`{self.resolved.call.ref}`"

    @property
    def subject(self) -> str:
        return f"{self.ref} on {self.resolved.target}"

    def decide(
        self, verdict: Verdict, reason: str, rule: str | None = None, **extra: Any
    ) -> Decision:
        return Decision(
            verdict=verdict,
            tier=self.tier,
            rule=rule or (self.rule.name if self.rule else "default"),
            reason=reason,
            base_tier=self.resolved.tier,
            channel_rule=self.place.match if self.place else None,
            **extra,
        )


def evaluate(
    policy: Policy, catalog: Catalog, call: Call, requester: Requester, channel: Channel,
    proposer: Proposer = Proposer.PERSON,
) -> Decision:
    """``proposer``: who chose this exact call. A person typing it gets ``autonomous_max_tier``;
    the model (and an alert's run, an MCP client) at most ``llm_autonomous_max_tier``."""
    try:
        resolved = catalog.resolve(call)
    except CallError as e:
        return Decision(verdict=Verdict.DENY, tier=Tier.PRODUCTION, rule="catalog", reason=str(e))
    rule = policy.first_rule(resolved)
    tier = max(resolved.tier, rule.tier if rule and rule.tier is not None else resolved.tier)
    case = _Case(policy, resolved, requester, channel, rule, tier, policy.channel_rule(channel),
                 proposer)
    if rule and rule.deny:
        reason = f"{case.subject} is denied by policy rule `{rule.name}`: {rule.deny}"
        return case.decide(Verdict.DENY, reason)
    return _requester_gate(case) or _channel_gate(case) or _autonomy(case) or _approval(case)


def _requester_gate(case: _Case) -> Decision | None:
    own = case.rule.requesters if case.rule else None
    gate = own or case.policy.requesters
    if gate is None or gate.allows(case.requester, case.tier):
        return None
    scope = "actions" if gate.from_tier == 0 else f"tier {gate.from_tier.label} actions and above"
    origin = f"rule `{case.rule.name}`" if own and case.rule else "policy `requesters`"
    reason = (
        f"<@{case.requester.user}> may not request {case.ref}: only {gate.describe()} may "
        f"request {scope} ({origin})."
    )
    return case.decide(Verdict.DENY, reason, rule=None if own else "requesters")


def _channel_gate(case: _Case) -> Decision | None:
    place = case.place
    if place is None or place.deny_from_tier is None or case.tier < place.deny_from_tier:
        return None
    advice = "Ask in a team channel instead." if case.channel.is_dm else "Ask in another channel."
    reason = (
        f"{case.ref} is tier {case.tier.label}, and {case.channel.shown} may not run tier "
        f"{place.deny_from_tier.label} actions or above. {advice}"
    )
    return case.decide(Verdict.DENY, reason, rule=f"channel {place.match}")


def _autonomy(case: _Case) -> Decision | None:
    if case.tier > _autonomy_limit(case):
        return None
    reason = f"{case.ref} is tier {case.tier.label}; it runs without approval."
    return case.decide(Verdict.ALLOW, reason)


def _autonomy_limit(case: _Case) -> Tier:
    return min([_own_limit(case), *_caps(case).values()])


def _own_limit(case: _Case) -> Tier:
    return min(case.policy.autonomous_max_tier, Tier.SANDBOX_EXECUTE)


def _caps(case: _Case) -> dict[str, Tier]:
    """What lowers the autonomy limit here, keyed by the words that explain it."""
    caps = {}
    if case.place and case.place.autonomous_max_tier is not None:
        caps[f"{case.channel.shown} runs"] = case.place.autonomous_max_tier
    if case.proposer is Proposer.MODEL:
        caps["calls that no person typed run"] = case.policy.llm_autonomous_max_tier
    return caps


def _approval(case: _Case) -> Decision:
    rule, policy, tier = case.rule, case.policy, case.tier
    approvers = rule.approvers if rule and rule.approvers else policy.approvers
    if not (approvers.users or approvers.groups):
        return case.decide(Verdict.DENY, _no_approvers(case))
    required = (rule and rule.approvals) or policy.approvals.get(tier) or approvers.required
    approval = approvers.model_copy(
        update={"required": required, "requester_may_approve": _self_approval(case)}
    )
    short = _shortfall(case, approval)
    if short:
        return case.decide(Verdict.DENY, short)
    expiry = (rule and rule.expiry_s) or policy.expiry_s.get(int(tier), DEFAULT_EXPIRY_S)
    return case.decide(
        Verdict.APPROVE, _needs(case, approval, expiry), approval=approval, expires_in_s=expiry
    )


def _self_approval(case: _Case) -> bool:
    if case.tier >= Tier.PRODUCTION:
        return False
    own = case.rule.requester_may_approve if case.rule else None
    return own if own is not None else case.policy.requester_may_approve.get(int(case.tier), True)


def _shortfall(case: _Case, approval: ApproverRule) -> str | None:
    """A two-person rule that nobody can satisfy, known before anyone waits for it."""
    if approval.groups:
        return None  # a Slack user group's size is only known to Slack
    eligible = set(approval.users)
    if not approval.requester_may_approve:
        eligible.discard(case.requester.user)
    if len(eligible) >= approval.required:
        return None
    but = ", not counting the requester" if case.requester.user in approval.users else ""
    return (
        f"{case.ref} needs {approval.required} approvals from different people, but only "
        f"{len(eligible)} eligible approver(s) are named ({approval.people()}{but}). "
        f"Add approvers in {case.policy.source or 'the policy file'}."
    )


def _no_approvers(case: _Case) -> str:
    head = f"{case.ref} is tier {case.tier.label} and needs approval, but"
    if case.policy.source is None:
        return (
            f"{head} no approvers are configured because no policy file is loaded. Set "
            "OPSBOT_POLICY to a policy file that names approvers (see policy.example.yml)."
        )
    where = f"rule `{case.rule.name}` or `defaults`" if case.rule else "`defaults`"
    return f"{head} {case.policy.source} names no approvers for it. Add `approvers:` to {where}."


def _needs(case: _Case, approval: ApproverRule, expiry_s: int) -> str:
    raised = ""
    if case.tier > case.resolved.tier and case.rule:
        raised = f" (raised from {case.resolved.tier.label} by rule `{case.rule.name}`)"
    capped = ""
    if case.tier <= _own_limit(case):
        capped = "".join(f", and {who} only tier {limit.label} and below without approval"
                         for who, limit in _caps(case).items() if case.tier > limit)
    if approval.required == 1:
        needs = f"approval from one of: {approval.people()}"
    else:
        needs = f"{approval.required} approvals from different people among: {approval.people()}"
    self_note = "; the requester can't approve it" if not approval.requester_may_approve else ""
    return (
        f"{case.subject} is tier {case.tier.label}{raised}{capped}: it needs {needs}{self_note}. "
        f"The request expires after {format_duration(expiry_s)}."
    )


def never_allowed(policy: Policy, toolset: str, action: str, base_tier: Tier,
                  channel: Channel) -> str:
    """Why every call of ``toolset.action`` in ``channel`` is denied whatever its parameters
    and whoever asks, or "" when some call might not be. The agent leaves such actions out of
    the tools it offers the model (issue 16: lean prompts); policy still decides every call.

    Sound because tiers only go up: a channel's ``deny_from_tier`` at or below the base tier
    denies every call; so does the first rule that can match the action when it matches on
    toolset and action alone and denies. A rule that looks at targets or tiers could match
    some calls and not others, so it ends the search with "not certain"."""
    place = policy.channel_rule(channel)
    if place is not None and place.deny_from_tier is not None and base_tier >= place.deny_from_tier:
        return f"channel {place.match}"
    for rule in policy.rules:
        match = rule.match
        if not (_any_glob(toolset, match.toolset) and _any_glob(action, match.action)):
            continue
        if match.target or match.tiers:
            return ""
        return f"rule {rule.name}" if rule.deny else ""
    return ""


def _any_glob(value: str, patterns: tuple[str, ...]) -> bool:
    return not patterns or any(fnmatchcase(value, p) for p in patterns)
