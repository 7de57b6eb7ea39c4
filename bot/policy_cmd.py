"""``opsbot policy check FILE`` and ``opsbot policy explain "<command>"``: policy from a shell.

``bot/cli.py`` parses the arguments and calls these; each prints its result and returns the
process exit code, so an operator can check a policy in CI before deploying it and can ask
"what would happen if U123 typed this in #incident-db?" without a Slack workspace::

    check("policy.yml")                  # prints "ok: 4 rules" -> 0, or file:line errors -> 1
    explain("redis flushdb db=0", user="U123", channel="#incident-db",
            policy_path="policy.yml", redis_url="redis://prod-cache-1:6379/0")   # -> 0
    explain(args, settings)              # the CLI's argparse namespace + Settings

``explain`` parses the command with the typed-command parser, resolves it against the
registered connectors with their default configs (``--redis-url`` overrides Redis's), and
evaluates it exactly as the bot would. It never connects to anything.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from graph.commands import ParseError, RunAction, parse
from graph.policy import (
    Channel,
    Decision,
    Policy,
    PolicyError,
    Requester,
    evaluate,
    format_duration,
    load_policy,
)
from tools import TOOLSETS
from tools.catalog import Call, CallError, Catalog, describe_validation
from tools.redis import RedisConfig


def check(path: str, settings: Any = None) -> int:
    """Validate the policy file at ``path``: 0 and ``ok: N rules``, or 1 and every error.

    With ``settings``, the MCP servers of ``OPSBOT_MCP`` count as toolsets (their tools are
    only known once listed, so rules naming their tools are checked at boot instead)."""
    try:
        policy = load_policy(path, [*TOOLSETS, *_mcp_toolsets(settings)])
    except PolicyError as e:
        print(e, file=sys.stderr)
        return 1
    count = len(policy.rules)
    print(f"ok: {count} rule{'' if count == 1 else 's'}")
    return 0


def _mcp_toolsets(settings: Any) -> list[Any]:
    if settings is None or getattr(settings, "mcp", None) is None:
        return []
    from bot.wiring import mcp_servers
    from tools.mcp import build_toolset

    servers = mcp_servers(settings)
    return [build_toolset(entry, []) for entry in (servers.servers if servers else ())]


def explain(
    command: str | Any,
    settings: Any = None,
    *,
    user: str = "",
    channel: str = "",
    channel_name: str = "",
    policy_path: str | Path | None = None,
    redis_url: str | None = None,
    groups: Sequence[str] = (),
) -> int:
    """Print the decision for ``command`` typed by ``user`` in ``channel``; 0 unless input is bad.

    Call it with explicit arguments, or as ``explain(args, settings)`` with the CLI's argparse
    namespace (see :func:`explain_namespace`). ``channel`` is a channel id (C…/G…, or D… for a
    DM), ``#name`` or ``dm``; ``channel_name`` adds the name to an id; ``groups`` are the
    requester's Slack user-group ids (the bot resolves them from Slack; here you say them);
    ``policy_path`` is ``OPSBOT_POLICY`` (None: the built-in default policy).
    """
    if not isinstance(command, str):
        return explain_namespace(command, settings)
    try:
        policy = load_policy(policy_path)
        catalog = explain_catalog(redis_url)
        call = _call(command, catalog)
    except (PolicyError, ParseError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    requester = Requester(user=user, groups=frozenset(groups))
    where = parse_channel(channel, channel_name)
    decision = evaluate(policy, catalog, call, requester, where)
    print("\n".join(_report(decision, policy, catalog, call)))
    return 0


def explain_namespace(args: Any, settings: Any = None) -> int:
    """``opsbot policy explain`` from argparse: ``text``, ``--user``, ``--channel``,
    ``--channel-name``, ``--groups S1,S2``, ``--policy``, ``--redis-url``; ``settings`` supplies
    ``OPSBOT_POLICY`` and ``REDIS_URL`` when the flags are absent."""
    groups = getattr(args, "groups", "") or ""
    if isinstance(groups, str):
        groups = [g.strip() for g in groups.split(",") if g.strip()]
    return explain(
        getattr(args, "text", None) or args.command,
        user=args.user,
        channel=args.channel,
        channel_name=getattr(args, "channel_name", "") or "",
        policy_path=getattr(args, "policy", None) or getattr(settings, "policy", None),
        redis_url=getattr(args, "redis_url", None) or getattr(settings, "redis_url", None),
        groups=groups,
    )


def explain_catalog(redis_url: str | None = None) -> Catalog:
    """The registered connectors with default configs; connectors needing config are left out."""
    configs: dict[str, BaseModel] = {}
    for toolset in TOOLSETS:
        try:
            configs[toolset.name] = toolset.config()
        except ValidationError:
            continue
    if redis_url is not None:
        try:
            configs["redis"] = RedisConfig(url=redis_url)
        except ValidationError as e:
            problem = describe_validation(e).removeprefix("url: ").removeprefix("Value error, ")
            raise ValueError(f"--redis-url {problem}") from None
    return Catalog(TOOLSETS, configs)


def parse_channel(text: str, name: str = "") -> Channel:
    """``dm``, ``#name``, a DM id (D…) or a channel id (plus its ``name``), as the bot sees it."""
    if text == "dm":
        return Channel(id="D0EXPLAIN", is_dm=True)
    if text.startswith("#"):
        return Channel(id="C0EXPLAIN", name=text[1:])
    return Channel(id=text, name=name.lstrip("#"), is_dm=text.startswith("D"))


def _call(command: str, catalog: Catalog) -> Call:
    parsed = parse(command, catalog)
    if not isinstance(parsed, RunAction):
        raise ValueError(
            f"`{command}` is not an action; explain takes `<toolset> <action> [key=value ...]`, "
            "e.g. `redis flushdb db=0`."
        )
    return Call(id="explain", toolset=parsed.toolset, action=parsed.action, params=parsed.params)


def _report(decision: Decision, policy: Policy, catalog: Catalog, call: Call) -> list[str]:
    lines = [f"decision: {decision.verdict.value.upper()}"]
    lines += _action_lines(catalog, call)
    base = decision.base_tier
    own = f" (the action's own tier: {base.label})" if base not in (None, decision.tier) else ""
    lines.append(f"tier:     {decision.tier.label}{own}")
    lines.append(f"rule:     {decision.rule} ({policy.source or 'built-in default policy'})")
    if decision.channel_rule:
        lines.append(f"channel:  matched channels entry `{decision.channel_rule}`")
    lines.append(f"reason:   {decision.reason}")
    if decision.approval:
        may = "yes" if decision.approval.requester_may_approve else "no"
        lines.append(f"approval: {decision.approval.describe()}; requester may approve: {may}")
        lines.append(f"expires:  {format_duration(decision.expires_in_s)}")
    return lines


def _action_lines(catalog: Catalog, call: Call) -> list[str]:
    try:
        resolved = catalog.resolve(call)
    except CallError:
        return []
    return [f"action:   {resolved.summary}", f"target:   {resolved.target}"]
