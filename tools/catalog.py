"""Turning a proposed call (from a typed command or the LLM) into a fully described action.

:class:`Catalog` holds the registered toolsets and each connector's config. ``resolve`` is pure:
it validates params and computes the target, egress, secrets and the canonical hash an approval
is bound to. Anything wrong with the call is a :class:`CallError` carrying the sentence the
user sees.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tools.base import Action, Endpoint, Mount, SecretRef, Target, Tier, Toolset


_KEY = re.compile(r"^[a-z_][a-z0-9_]*$")
MAX_PARAMS_CHARS = 32_000  # a GitHub issue body (20,000) and then some


class CallError(ValueError):
    """A call that cannot be resolved; ``str(e)`` is a sentence for the user."""


class Call(BaseModel):
    """A proposed invocation, exactly as requested (untrusted)."""

    model_config = ConfigDict(frozen=True)

    id: str
    toolset: str
    action: str
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.toolset} {self.action}"


@dataclass(frozen=True)
class Resolved:
    """A validated call with everything policy, approvals and the sandbox need to know."""

    call: Call
    toolset: Toolset[Any]
    action: Action[Any]
    params: BaseModel
    config: BaseModel
    target: Target
    egress: list[Endpoint]
    secrets: list[SecretRef]
    mounts: list[Mount] = field(default_factory=list)

    @property
    def tier(self) -> Tier:
        return self.action.tier

    @property
    def preview_secrets(self) -> list[SecretRef]:
        """What the action's dry run gets: a preview only reads, so it is asked for what a
        tier-0 action of the same toolset gets (a read-only database user, not the write one)."""
        reader = dataclasses.replace(self.action, tier=Tier.OBSERVE)
        return self.toolset.secrets(reader, self.params, self.config)

    @property
    def summary(self) -> str:
        return self.action.summary(self.params)

    @property
    def canonical(self) -> dict[str, Any]:
        return canonical_action(
            self.toolset.name, self.action.name, self.params.model_dump(mode="json"), self.target
        )

    @property
    def hash(self) -> str:
        return action_hash(self.canonical)


def canonical_action(
    toolset: str, action: str, params: Mapping[str, Any], target: Target
) -> dict[str, Any]:
    return {
        "toolset": toolset,
        "action": action,
        "params": dict(params),
        "target": target.model_dump(mode="json"),
    }


def action_hash(canonical: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON form (sorted keys, no whitespace)."""
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class Catalog:
    """The registered toolsets plus their connector configs. Pure: no I/O.

    Toolsets come from Python modules (``tools.TOOLSETS``) or are built from data at run time
    (an MCP server's tool list, ``tools/mcp.py``): :meth:`install` adds or replaces one, and
    ``generation`` counts changes so derived views (the LLM's tool list) know to rebuild."""

    def __init__(self, toolsets: Sequence[Toolset[Any]], configs: Mapping[str, BaseModel]):
        self.toolsets = {t.name: t for t in toolsets}
        self.configs = dict(configs)
        self.generation = 0
        self.unavailable: dict[str, str] = {}  # toolset -> why its actions cannot work here

    def mark_unavailable(self, name: str, reason: str) -> None:
        """A configured toolset whose actions cannot work here (``/ops help`` says why)."""
        self.unavailable[name] = reason

    def install(self, toolset: Toolset[Any], config: BaseModel) -> None:
        """Add or replace a toolset (and its config) built at run time."""
        self.toolsets[toolset.name] = toolset
        self.configs[toolset.name] = config
        self.generation += 1

    def enabled(self) -> list[Toolset[Any]]:
        return [t for t in self.toolsets.values() if t.name in self.configs]

    def toolset(self, name: str) -> Toolset[Any]:
        toolset = self.toolsets.get(name)
        if toolset is None:
            raise CallError(f"Unknown toolset `{name}`.{_suggest(name, self.toolsets)}")
        if name not in self.configs:
            raise CallError(f"The `{name}` toolset is not configured on this opsbot.")
        return toolset

    def resolve(self, call: Call) -> Resolved:
        toolset = self.toolset(call.toolset)
        action = toolset.action(call.action)
        if action is None:
            names = [a.name for a in toolset.actions]
            raise CallError(
                f"`{toolset.name}` has no action `{call.action}`.{_suggest(call.action, names)}"
            )
        try:
            params = action.params.model_validate(call.params)
        except ValidationError as e:
            raise CallError(f"Bad parameters for `{call.ref}`: {describe_validation(e)}") from None
        _check_size(call.ref, params)
        config = self.configs[toolset.name]
        return Resolved(
            call=call,
            toolset=toolset,
            action=action,
            params=params,
            config=config,
            target=toolset.target(action, params, config),
            egress=toolset.egress(action, params, config),
            secrets=toolset.secrets(action, params, config),
            mounts=toolset.mounts(action, params, config),
        )


def _check_size(ref: str, params: BaseModel) -> None:
    """Every action an approver is asked about must be readable whole; connectors bound each
    param, and this bounds the whole call for any connector that forgot one."""
    size = len(json.dumps(params.model_dump(mode="json"), ensure_ascii=False))
    if size > MAX_PARAMS_CHARS:
        raise CallError(
            f"The parameters for `{ref}` are {size:,} characters; opsbot accepts at most "
            f"{MAX_PARAMS_CHARS:,} so that an approver can read the whole action."
        )


def parse_params(model: type[BaseModel], args: list[str], ref: str) -> dict[str, Any]:
    """Typed arguments as people write them: ``key=value`` pairs, and bare values that fill the
    action's required parameters in order (a list parameter takes the rest). Values stay
    strings for pydantic to coerce, except ``[...]`` / ``{...}`` JSON. ``ref`` names the action
    in error sentences."""
    params: dict[str, Any] = {}
    bare: list[str] = []
    for word in args:
        key, eq, value = word.partition("=")
        if eq and _KEY.match(key):
            if key in params:
                raise CallError(f"`{key}` is given twice.")
            params[key] = _value(value)
        else:
            bare.append(word)
    if bare:
        _fill_bare(model, bare, params, ref)
    return params


def _fill_bare(model: type[BaseModel], values: list[str], params: dict[str, Any], ref: str) -> None:
    slots = [n for n, f in model.model_fields.items() if f.is_required() and n not in params]
    if not slots:
        raise CallError(f"`{ref}` takes no bare values; use key=value (got `{' '.join(values)}`).")
    for i, name in enumerate(slots[: len(values)]):
        if getattr(model.model_fields[name].annotation, "__origin__", None) is list:
            params[name] = values[i:]
            return
        params[name] = values[i]
    if len(values) > len(slots):
        raise CallError(f"`{ref}` got unexpected extra values: `{' '.join(values[len(slots):])}`.")


def _value(raw: str) -> Any:
    if raw[:1] not in ("[", "{"):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        if raw[0] == "[" and raw[-1] == "]":  # [a,b]: the shell ate the quotes
            return [item.strip() for item in raw[1:-1].split(",") if item.strip()]
        raise CallError(f"`{raw[:40]}` looks like JSON but isn't valid JSON.") from None


def describe_validation(error: ValidationError) -> str:
    """One line per problem, naming the field: ``key: Field required``."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "params"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    options = ", ".join(f"`{c}`" for c in sorted(choices))
    hint = f" Did you mean `{close[0]}`?" if close else ""
    return f"{hint} Available: {options}." if options else hint
