"""The policy file's schema (version 1): exactly what an SRE may write in ``OPSBOT_POLICY``.

Every model forbids unknown keys, so a typo is an error instead of a silently weaker policy.
The scalar types accept the friendly forms people write (``4`` or ``production`` for a tier,
``30m`` for a duration) and reject everything else with a sentence that names the fix;
``graph/policy/load.py`` maps each error back to its file and line, and ``graph/policy/model.py``
compiles a validated :class:`PolicyFile` into the runtime ``Policy``. docs/policy.md is the
reference for this format.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tools.base import Tier
from tools.secrets import SHAPES

MIN_EXPIRY_S = 60
MAX_EXPIRY_S = 7 * 24 * 3600
MAX_APPROVALS = 10
MAX_REGEX = 500
MAX_RATE = 100_000
MIN_WINDOW_S = 60
TIER_NAMES = {t.name.lower().replace("_", "-"): t for t in Tier}
# The target kinds named by the tools.base.Target contract; a `kind:` pattern must match one.
TARGET_KINDS = ("redis", "github_repo", "pulumi_stack", "container")

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_SUBTEAM_ID = re.compile(r"^S[A-Z0-9]{2,}$")
_BOT_ID = re.compile(r"^B[A-Z0-9]{2,}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_CHANNEL_NAME = re.compile(r"^#[a-z0-9_\-.*?\[\]!]{1,80}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9*?]{2,}$")
_ATTR = re.compile(r"^[A-Za-z0-9_.\-/]{1,63}$")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")  # Prometheus label names
_POST_CHANNEL = re.compile(r"^[CG][A-Z0-9]{2,}$")
_REPO = re.compile(r"^[A-Za-z0-9_.\-*?\[\]]{1,100}/[A-Za-z0-9_.\-*?\[\]]{1,100}$")


def _tier(value: Any) -> Tier:
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 4:
            return Tier(value)
        raise ValueError(f"{value} is not a tier (0-4)")
    if isinstance(value, str):
        word = value.strip().lower().replace("_", "-")
        if word.isdigit():
            return _tier(int(word))
        if word in TIER_NAMES:
            return TIER_NAMES[word]
    names = ", ".join(TIER_NAMES)
    raise ValueError(f"{show(value)} is not a tier; use 0-4 or one of: {names}")


def _autonomy(tier: Tier) -> Tier:
    if tier >= Tier.PRODUCTION:
        raise ValueError(
            "4 would let production changes run without approval; the highest allowed is 3 "
            "(tier 4 is always gated)"
        )
    return tier


def _tiers(value: Any) -> tuple[Tier, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(_tier(v) for v in items)


def parse_duration(value: Any) -> int:
    """Seconds from ``90``, ``90s``, ``30m``, ``1h``, ``1h30m`` or ``2d``, within 1m-7d."""
    seconds = _seconds(value)
    if not MIN_EXPIRY_S <= seconds <= MAX_EXPIRY_S:
        raise ValueError(f"{show(value)} is outside 1m-7d; an approval must expire in that range")
    return seconds


def _seconds(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    found = _DURATION.match(value.strip()) if isinstance(value, str) else None
    if not found or not any(found.groups()):
        raise ValueError(f"{show(value)} is not a duration; write e.g. 90s, 30m, 1h or 1h30m")
    d, h, m, s = (int(g or 0) for g in found.groups())
    return ((d * 24 + h) * 60 + m) * 60 + s


def format_duration(seconds: int) -> str:
    """The inverse of :func:`parse_duration` for display: 5400 -> ``1h30m``."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _count(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_APPROVALS:
        return value
    raise ValueError(f"{show(value)} is not a number of approvals; use 1-{MAX_APPROVALS}")


def _id(pattern: re.Pattern[str], what: str, fix: str):
    def check(value: Any) -> str:
        if isinstance(value, str) and pattern.match(value):
            return value
        raise ValueError(f"{show(value)} is not a {what}; {fix}")

    return check


def _channel(value: Any) -> str:
    if value is None:
        raise ValueError(
            'is empty; if you wrote an unquoted #name, quote it ("#incident-*"): '
            "in YAML an unquoted # starts a comment"
        )
    if isinstance(value, str) and (
        value == "dm" or _CHANNEL_NAME.match(value) or _CHANNEL_ID.match(value)
    ):
        return value
    hint = f' (did you mean "#{value.lower()}"?)' if isinstance(value, str) else ""
    raise ValueError(
        f"{show(value)} is not a channel pattern{hint}; write a channel id (C…), "
        'a quoted #name glob like "#incident-*", or dm'
    )


def _patterns(value: Any) -> tuple[str, ...]:
    if value is None:
        raise ValueError("is empty; give a glob pattern or a list of them")
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str) or not item:
            raise ValueError(f"{show(value)} is not a glob pattern or a list of them")
        out.append(item)
    if not out:
        raise ValueError("is an empty list; give at least one pattern")
    return tuple(out)


def _name(value: Any) -> str:
    if isinstance(value, str) and _NAME.match(value):
        return value
    raise ValueError(f"{show(value)} is not a name; use lowercase letters, digits, - and _")


def _attr(value: Any) -> str:
    if isinstance(value, str) and _ATTR.match(value):
        return value
    raise ValueError(f"{show(value)} is not a target attribute name")


def show(value: Any) -> str:
    """How a bad value appears inside an error sentence."""
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"`{value}`"


def _shape_name(value: Any) -> str:
    names = [s.name for s in SHAPES]
    if isinstance(value, str) and value in names:
        return value
    raise ValueError(f"{show(value)} is not a secret shape opsbot knows; use one of: "
                     f"{', '.join(names)} (or add your own under `extra`)")


def _shape_list(value: Any) -> Any:
    if value == "all":
        return None
    if value == "none":
        return ()
    if isinstance(value, list):
        return value
    raise ValueError(f"{show(value)} is not `all`, `none` or a list of secret shapes")


def _rate(value: Any) -> tuple[int, int]:
    """``20/1h`` -> (20, 3600): at most 20 in any hour."""
    count, slash, window = value.partition("/") if isinstance(value, str) else ("", "", "")
    try:
        seconds = _seconds(window) if slash else 0
    except ValueError:
        seconds = 0
    if not (count.strip().isdigit() and 1 <= int(count) <= MAX_RATE and
            MIN_WINDOW_S <= seconds <= MAX_EXPIRY_S):
        raise ValueError(f"{show(value)} is not a rate; write how many per how long, e.g. "
                         f"20/1h or 5/10m (1-{MAX_RATE} per 1m-7d)")
    return int(count), seconds


def _regex(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_REGEX:
        raise ValueError(f"{show(value)} is not a regular expression of 1-{MAX_REGEX} characters")
    try:
        compiled = re.compile(value)
    except re.error as e:
        raise ValueError(f"{show(value)} is not a valid regular expression ({e})") from None
    if compiled.fullmatch(""):
        raise ValueError(f"{show(value)} matches empty text, so it would redact nothing useful "
                         "and mark every gap; make it match the secret itself")
    return value


def _label(value: Any) -> str:
    if isinstance(value, str) and _LABEL.match(value):
        return value
    raise ValueError(f"{show(value)} is not a Prometheus label name (letters, digits and _, "
                     "not starting with a digit)")


def _post_channel(value: Any) -> str:
    if isinstance(value, str) and _POST_CHANNEL.match(value):
        return value
    raise ValueError(f"{show(value)} is not a channel id; a run posts by id, so write the "
                     "channel's id (C…, from the channel's details), not a #name or a glob")


def _repo(value: Any) -> str:
    if isinstance(value, str) and _REPO.match(value):
        return value
    raise ValueError(f"{show(value)} is not a repository; write owner/name (globs allowed: "
                     "acme/*)")


TierValue = Annotated[Tier, BeforeValidator(_tier)]
AutonomyTier = Annotated[Tier, BeforeValidator(_tier), AfterValidator(_autonomy)]
TierList = Annotated[tuple[Tier, ...], BeforeValidator(_tiers)]
Duration = Annotated[int, BeforeValidator(parse_duration)]
Count = Annotated[int, BeforeValidator(_count)]
Name = Annotated[str, BeforeValidator(_name)]
Patterns = Annotated[tuple[str, ...], BeforeValidator(_patterns)]
AttrName = Annotated[str, BeforeValidator(_attr)]
ChannelPattern = Annotated[str, BeforeValidator(_channel)]
LabelName = Annotated[str, BeforeValidator(_label)]
PostChannel = Annotated[str, BeforeValidator(_post_channel)]
RepoPattern = Annotated[str, BeforeValidator(_repo)]
Rate = Annotated[tuple[int, int], BeforeValidator(_rate)]
ShapeName = Annotated[str, BeforeValidator(_shape_name)]
ShapeList = Annotated[tuple[ShapeName, ...] | None, BeforeValidator(_shape_list)]
Regex = Annotated[str, BeforeValidator(_regex)]
UserId = Annotated[
    str,
    BeforeValidator(
        _id(_USER_ID, "Slack user id (U… or W…)", "copy it from the profile: ⋮ → Copy member ID")
    ),
]
SubteamId = Annotated[
    str,
    BeforeValidator(
        _id(_SUBTEAM_ID, "Slack user-group id (S…)", "find it with the usergroups.list API")
    ),
]
BotId = Annotated[
    str, BeforeValidator(_id(_BOT_ID, "Slack bot id (B…)", "it is the bot_id of its messages"))
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GroupSpec(_Strict):
    """A named set of people who can be approvers or requesters."""

    users: tuple[UserId, ...] = ()
    slack_groups: tuple[SubteamId, ...] = ()

    @model_validator(mode="after")
    def _members(self) -> GroupSpec:
        if not (self.users or self.slack_groups):
            raise ValueError("a group needs `users` or `slack_groups`")
        return self


class DefaultsSpec(_Strict):
    """What applies when no rule says otherwise."""

    autonomous_max_tier: AutonomyTier = Tier.DRAFT
    llm_autonomous_max_tier: AutonomyTier = Tier.OBSERVE
    approvers: tuple[Name, ...] = ()
    approvals: dict[TierValue, Count] = {}
    expiry: dict[TierValue, Duration] = {}
    requester_may_approve: dict[TierValue, bool] = {}

    @field_validator("requester_may_approve")
    @classmethod
    def _never_self_at_4(cls, value: dict[Tier, bool]) -> dict[Tier, bool]:
        if value.get(Tier.PRODUCTION):
            raise ValueError("tier 4 never lets the requester approve; remove `4: true`")
        return value

    @field_validator("llm_autonomous_max_tier")
    @classmethod
    def _model_not_above_people(cls, value: Tier, info: ValidationInfo) -> Tier:
        people = info.data.get("autonomous_max_tier", Tier.DRAFT)
        if value > people:
            raise ValueError(f"{int(value)} is above autonomous_max_tier ({int(people)}): the "
                             "model never gets more autonomy than a person; lower it")
        return value


class ChannelSpec(_Strict):
    """An autonomy cap and/or a tier ceiling for the channels that ``match`` names."""

    match: ChannelPattern
    autonomous_max_tier: AutonomyTier | None = None
    deny_from_tier: TierValue | None = None

    @model_validator(mode="after")
    def _effect(self) -> ChannelSpec:
        if self.autonomous_max_tier is None and self.deny_from_tier is None:
            raise ValueError("a channel entry needs `autonomous_max_tier` or `deny_from_tier`")
        return self


class RequestersSpec(_Strict):
    """Who may request actions of ``from_tier`` and above (everyone, when absent)."""

    users: tuple[UserId, ...] = ()
    slack_groups: tuple[SubteamId, ...] = ()
    groups: tuple[Name, ...] = ()
    from_tier: TierValue = Tier.OBSERVE

    @model_validator(mode="after")
    def _someone(self) -> RequestersSpec:
        if not (self.users or self.slack_groups or self.groups):
            raise ValueError("`requesters` names nobody; list `users`, `slack_groups` or `groups`")
        return self


class MatchSpec(_Strict):
    """What a rule applies to; every key given must match (glob patterns, any of a list)."""

    toolset: Patterns | None = None
    action: Patterns | None = None
    tier: TierList | None = None
    target: dict[AttrName, Patterns] = {}


_EFFECTS = ("tier", "approvers", "approvals", "expiry", "requester_may_approve", "requesters")


class RuleSpec(_Strict):
    """One rule: a match plus either ``deny`` or the approval requirements it sets."""

    name: Name
    match: MatchSpec
    deny: str | None = None
    tier: TierValue | None = None
    approvers: tuple[Name, ...] | None = None
    approvals: Count | None = None
    expiry: Duration | None = None
    requester_may_approve: bool | None = None
    requesters: RequestersSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> RuleSpec:
        given = [k for k in _EFFECTS if getattr(self, k) is not None]
        if self.deny is not None and given:
            extra = ", ".join(f"`{k}`" for k in given)
            raise ValueError(f"a `deny` rule denies outright; remove {extra}")
        if self.deny is not None and not self.deny.strip():
            raise ValueError("`deny` needs the sentence the user will see")
        if self.deny is None and not given:
            effects = ", ".join(_EFFECTS)
            raise ValueError(f"the rule has no effect; give it `deny` or one of: {effects}")
        if self.requester_may_approve and self.tier == Tier.PRODUCTION:
            raise ValueError("requester_may_approve: tier 4 never lets the requester approve")
        return self


class BudgetSpec(_Strict):
    """LLM spend: total tokens and/or estimated US dollars (at list price, graph/usage.py)."""

    tokens: int | None = Field(None, ge=1, le=10**10)
    usd: float | None = Field(None, gt=0, le=100_000)

    @model_validator(mode="after")
    def _something(self) -> BudgetSpec:
        if self.tokens is None and self.usd is None:
            raise ValueError("a budget needs `tokens`, `usd` or both")
        return self


class LimitsSpec(_Strict):
    """Rate limits on starting runs, and LLM spend budgets; each refusal is a sentence."""

    runs_per_user: Rate | None = None
    runs_per_channel: Rate | None = None
    llm_per_run: BudgetSpec | None = None
    llm_per_channel_per_day: BudgetSpec | None = None


class RedactionSpec(_Strict):
    """Which well-known secret shapes are removed from everything opsbot writes (all of them
    unless ``shapes`` lists fewer), plus an operator's own under ``extra`` (name: regex)."""

    shapes: ShapeList = None  # `all` (None), `none` or a list
    extra: dict[Name, Regex] = {}


class AlertRouteSpec(_Strict):
    """Where an Alertmanager group is investigated: the channel of the first route whose
    ``match`` fits the labels its alerts share (label: glob or list of globs; every label
    given must match; an empty ``match`` catches every group)."""

    match: dict[LabelName, Patterns] = {}
    channel: PostChannel


class GithubRepoSpec(_Strict):
    """A repository whose webhooks opsbot acts on, and the channel it reports in:
    ``reviews`` (pull requests opened or pushed to) and ``failures`` (failed checks and
    workflow runs on the default branch)."""

    repo: RepoPattern
    channel: PostChannel
    reviews: bool = True
    failures: bool = True

    @model_validator(mode="after")
    def _something(self) -> GithubRepoSpec:
        if not (self.reviews or self.failures):
            raise ValueError("the entry does nothing; set `reviews` or `failures` to true")
        return self


class PolicyFile(_Strict):
    """The whole file. ``rules`` are tried in order; the first match wins."""

    version: Literal[1]
    groups: dict[Name, GroupSpec] = {}
    defaults: DefaultsSpec = DefaultsSpec()
    channels: tuple[ChannelSpec, ...] = ()
    incident_channels: tuple[ChannelPattern, ...] = ()
    pagerduty_bot_ids: tuple[BotId, ...] = ()
    alert_routes: tuple[AlertRouteSpec, ...] = ()
    github_repos: tuple[GithubRepoSpec, ...] = ()
    requesters: RequestersSpec | None = None
    rules: tuple[RuleSpec, ...] = ()
    redaction: RedactionSpec = RedactionSpec()
    limits: LimitsSpec = LimitsSpec()
