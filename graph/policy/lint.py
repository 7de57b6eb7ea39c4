"""Checks that need the whole policy file, run after the schema accepted it.

Each finds a way a policy that *parses* would still not do what its author meant: a group name
that is not defined, a two-person rule nobody can satisfy, a rule that can never match because
an earlier rule already matches everything it does (first match wins), a toolset or action
name that matches nothing this opsbot has. Each returns ``(path, sentence)`` pairs; the
file reader turns the path into a line.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from fnmatch import fnmatchcase
from typing import Any

from graph.policy.schema import TARGET_KINDS, MatchSpec, PolicyFile, RuleSpec
from tools.base import Toolset

Found = tuple[tuple[str | int, ...], str]
_GLOB = set("*?[")


def semantic_issues(spec: PolicyFile, toolsets: Sequence[Toolset[Any]] | None) -> list[Found]:
    """Every whole-file problem in ``spec``; ``toolsets=None`` skips the registry names."""
    found = [
        *_duplicate_names(spec),
        *_group_references(spec),
        *_feasible_approvals(spec),
        *_unreachable_rules(spec),
        *_duplicate_channels(spec),
        *_unreachable_routes(spec),
        *_target_kinds(spec, _known_kinds(toolsets)),
    ]
    if toolsets is not None:
        found += _registry_names(spec, toolsets)
    return found


def _duplicate_names(spec: PolicyFile) -> Iterator[Found]:
    first: dict[str, int] = {}
    for i, rule in enumerate(spec.rules):
        if rule.name in first:
            message = f"`{rule.name}` is already the name of rules[{first[rule.name]}]"
            yield ("rules", i, "name"), message
        first.setdefault(rule.name, i)


def _group_references(spec: PolicyFile) -> Iterator[Found]:
    refs: list[tuple[tuple[str | int, ...], tuple[str, ...]]] = [
        (("defaults", "approvers"), spec.defaults.approvers),
    ]
    if spec.requesters:
        refs.append((("requesters", "groups"), spec.requesters.groups))
    for i, rule in enumerate(spec.rules):
        refs.append((("rules", i, "approvers"), rule.approvers or ()))
        if rule.requesters:
            refs.append((("rules", i, "requesters", "groups"), rule.requesters.groups))
    for path, names in refs:
        for k, name in enumerate(names):
            if name not in spec.groups:
                yield path + (k,), _undefined_group(name, list(spec.groups))


def _undefined_group(name: str, defined: list[str]) -> str:
    close = difflib.get_close_matches(name, defined, n=1)
    hint = f" (did you mean `{close[0]}`?)" if close else ""
    listed = f"defined: {', '.join(defined)}" if defined else "no groups are defined"
    return f"`{name}` is not a group under `groups`{hint}; {listed}"


def _feasible_approvals(spec: PolicyFile) -> Iterator[Found]:
    for tier, count in spec.defaults.approvals.items():
        problem = spec.defaults.approvers and _shortfall(spec, spec.defaults.approvers, count)
        if problem:
            yield ("defaults", "approvals", int(tier)), problem
    for i, rule in enumerate(spec.rules):
        if rule.approvals is None:
            continue
        problem = _shortfall(spec, rule.approvers or spec.defaults.approvers, rule.approvals)
        if problem:
            yield ("rules", i, "approvals"), problem


def _shortfall(spec: PolicyFile, names: tuple[str, ...], count: int) -> str | None:
    groups = [spec.groups[n] for n in names if n in spec.groups]
    if not names:
        return "approvals are set but no approvers are named; add `approvers` here or in `defaults`"
    if any(g.slack_groups for g in groups):
        return None  # a Slack user group's size is only known at run time
    people = {u for g in groups for u in g.users}
    if groups and len(people) < count:
        return (
            f"{count} approvals from different people are required, but its approvers "
            f"({', '.join(names)}) name only {len(people)} people and no Slack user group"
        )
    return None


def _unreachable_rules(spec: PolicyFile) -> Iterator[Found]:
    for j, later in enumerate(spec.rules):
        earlier = next((i for i in range(j) if _covers(spec.rules[i].match, later.match)), None)
        if earlier is not None:
            name = spec.rules[earlier].name
            message = (
                f"rule `{later.name}` can never match: rules[{earlier}] (`{name}`) comes first "
                f"and matches everything it does (first match wins); move it above `{name}`"
            )
            yield ("rules", j), message


def _covers(a: MatchSpec, b: MatchSpec) -> bool:
    """Whether every call matching ``b`` also matches ``a`` (sound, not complete)."""
    if a.tier is not None and (b.tier is None or not set(b.tier) <= set(a.tier)):
        return False
    pairs = [(a.toolset, b.toolset), (a.action, b.action)]
    pairs += [(pats, b.target.get(key)) for key, pats in a.target.items()]
    return all(_patterns_cover(pa, pb) for pa, pb in pairs)


def _patterns_cover(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> bool:
    if a is None:
        return True
    return b is not None and all(any(_pattern_covers(pa, pb) for pa in a) for pb in b)


def _pattern_covers(a: str, b: str) -> bool:
    return a == "*" or a == b or (not _GLOB & set(b) and fnmatchcase(b, a))


def _unreachable_routes(spec: PolicyFile) -> Iterator[Found]:
    """An alert route after one with the same (or an empty, catch-all) ``match`` never
    applies; neither does a ``github_repos`` entry after one with the same ``repo``."""
    seen: dict[tuple[tuple[str, tuple[str, ...]], ...], int] = {}
    for k, route in enumerate(spec.alert_routes):
        match = tuple(sorted(route.match.items()))
        earlier = seen.get(()) if () in seen else seen.get(match)
        if earlier is not None:
            what = "catches every group" if earlier == seen.get(()) else "has the same match"
            yield (("alert_routes", k, "match"),
                   f"alert_routes[{earlier}] {what}, so this route never applies "
                   "(first match wins)")
        seen.setdefault(match, k)
    repos: dict[str, int] = {}
    for k, entry in enumerate(spec.github_repos):
        if entry.repo.lower() in repos:
            yield (("github_repos", k, "repo"),
                   f"`{entry.repo}` is already named by github_repos[{repos[entry.repo.lower()]}]"
                   ", so this entry never applies (first match wins)")
        repos.setdefault(entry.repo.lower(), k)


def _duplicate_channels(spec: PolicyFile) -> Iterator[Found]:
    first: dict[str, int] = {}
    for k, entry in enumerate(spec.channels):
        if entry.match in first:
            message = (
                f"`{entry.match}` is already matched by channels[{first[entry.match]}], "
                "so this entry never applies (first match wins)"
            )
            yield ("channels", k, "match"), message
        first.setdefault(entry.match, k)


def _known_kinds(toolsets: Sequence[Toolset[Any]] | None) -> tuple[str, ...]:
    """The built-in kinds plus those the registered toolsets declare (``Toolset.target_kinds``)."""
    declared = [kind for t in toolsets or () for kind in t.target_kinds]
    return tuple(dict.fromkeys((*TARGET_KINDS, *declared)))


def _target_kinds(spec: PolicyFile, known: tuple[str, ...]) -> Iterator[Found]:
    """Catch likely typos of the known kinds; unknown but distinct kinds may be new connectors."""
    for i, rule in enumerate(spec.rules):
        for pattern in rule.match.target.get("kind", ()):
            if any(fnmatchcase(kind, pattern) for kind in known):
                continue
            close = difflib.get_close_matches(pattern, known, n=1, cutoff=0.75)
            if close:
                yield (
                    ("rules", i, "match", "target", "kind"),
                    (f"`{pattern}` is not a target kind (did you mean `{close[0]}`?)"),
                )


def _registry_names(spec: PolicyFile, toolsets: Sequence[Toolset[Any]]) -> Iterator[Found]:
    for i, rule in enumerate(spec.rules):
        yield from _rule_names(i, rule, toolsets)


def _rule_names(i: int, rule: RuleSpec, toolsets: Sequence[Toolset[Any]]) -> Iterator[Found]:
    match = rule.match
    names = [t.name for t in toolsets]
    for pattern in match.toolset or ():
        if not any(fnmatchcase(n, pattern) for n in names):
            yield ("rules", i, "match", "toolset"), _nothing("toolset", pattern, names)
    chosen = [t for t in toolsets if _any_match(t.name, match.toolset)]
    if any(not t.actions for t in chosen):
        return  # an MCP server whose tools could not be listed: its names are unknown yet
    actions = sorted({a.name for t in chosen for a in t.actions})
    scope = f"action of {', '.join(t.name for t in chosen)}" if match.toolset else "action"
    for pattern in match.action or ():
        if chosen and not any(fnmatchcase(a, pattern) for a in actions):
            yield ("rules", i, "match", "action"), _nothing(scope, pattern, actions)


def _any_match(name: str, patterns: tuple[str, ...] | None) -> bool:
    return patterns is None or any(fnmatchcase(name, p) for p in patterns)


def _nothing(what: str, pattern: str, names: list[str]) -> str:
    close = difflib.get_close_matches(pattern, names, n=1)
    hint = f" (did you mean `{close[0]}`?)" if close else ""
    return f"`{pattern}` matches no {what} this opsbot has{hint}; it has: {', '.join(names)}"
