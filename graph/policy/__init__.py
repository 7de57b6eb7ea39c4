"""Policy: may this requester run this concrete action here, and who must approve it?

The package follows a policy file from text to verdict:

- ``schema``: what an SRE may write in ``OPSBOT_POLICY`` (pydantic models, friendly scalars);
- ``load``: YAML with line numbers, every problem as ``file:line: path: sentence``;
- ``lint``: whole-file checks (unknown groups, unreachable rules, names that match nothing);
- ``model``: the compiled runtime ``Policy`` (group names resolved to Slack ids);
- ``evaluate``: the pure ``evaluate(policy, catalog, call, requester, channel) -> Decision``.

Callers import the public names from here::

    from graph.policy import Channel, Requester, evaluate, load_policy
"""

from graph.policy.evaluate import Decision, Verdict, evaluate, never_allowed
from graph.policy.load import Issue, PolicyError, load_policy, parse_policy
from graph.policy.model import (
    Channel,
    ChannelRule,
    Match,
    Policy,
    Proposer,
    Requester,
    RequesterRule,
    Rule,
    compile_policy,
)
from graph.policy.schema import format_duration

__all__ = [
    "Channel",
    "ChannelRule",
    "Decision",
    "Issue",
    "Match",
    "Policy",
    "PolicyError",
    "Proposer",
    "Requester",
    "RequesterRule",
    "Rule",
    "Verdict",
    "compile_policy",
    "evaluate",
    "never_allowed",
    "format_duration",
    "load_policy",
    "parse_policy",
]
