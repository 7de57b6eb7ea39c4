"""The catalog's promise to approvers: every call it resolves is small enough to read whole.

Each connector bounds its own params (a Redis key ≤ 512 characters, at most 100 keys ...);
the catalog bounds the whole call for any connector that forgot one.
"""

import re
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from tools import TOOLSETS
from tools.base import Action, Target, Tier, ToolResult, Toolset
from tools.catalog import MAX_PARAMS_CHARS, Call, CallError, Catalog
from tools.redis import RedisConfig

_UNBOUNDED = re.compile(r"(?<!\\)[*+]|\{\d+,\}")


def _bounded(schema: dict[str, Any], defs: dict[str, Any], where: str) -> list[str]:
    """Where a JSON schema lets a value grow without limit."""
    if "$ref" in schema:
        return _bounded(defs[schema["$ref"].split("/")[-1]], defs, where)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return [p for s in schema[key] for p in _bounded(s, defs, where)]
    kind = schema.get("type")
    if kind == "string" and not ({"maxLength", "enum", "const"} & schema.keys()):
        pattern = schema.get("pattern", "")
        if not pattern or _UNBOUNDED.search(pattern) or not pattern.endswith("$"):
            return [f"{where}: a string without maxLength"]
    if kind == "array":
        found = [] if "maxItems" in schema else [f"{where}: a list without maxItems"]
        return found + _bounded(schema.get("items", {}), defs, f"{where}[]")
    if kind == "object":  # a free-form object (an OpenAPI JSON body) is checked against the
        # vendor's document and bounded as a whole by the catalog's MAX_PARAMS_CHARS
        props = schema.get("properties", {})
        return [p for n, s in props.items() for p in _bounded(s, defs, f"{where}.{n}")]
    return []


@pytest.mark.parametrize("toolset", TOOLSETS, ids=lambda t: t.name)
def test_every_param_of_every_action_is_bounded(toolset):
    problems = []
    for action in toolset.actions:
        schema = action.params.model_json_schema()
        problems += _bounded(schema, schema.get("$defs", {}), f"{toolset.name} {action.name}")
    assert problems == []


def test_the_bound_check_finds_an_unbounded_list_of_strings():
    class Loose(BaseModel):
        keys: list[str]

    schema = Loose.model_json_schema()
    assert _bounded(schema, {}, "x") == ["x.keys: a list without maxItems",
                                         "x.keys[]: a string without maxLength"]


class _Free(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str  # a connector that forgot to bound its param


_SLOPPY = Toolset(
    name="sloppy", description="test", config=RedisConfig,
    actions=[Action(name="say", description="x", tier=Tier.OBSERVE, params=_Free,
                    summary=lambda p: "say", run=lambda p, c: ToolResult.ok("say", ""))],
    target=lambda a, p, c: Target(kind="test", name="t"),
)


def test_a_call_too_large_to_read_whole_is_refused_with_a_sentence():
    catalog = Catalog([_SLOPPY], {"sloppy": RedisConfig()})
    assert catalog.resolve(Call(id="1", toolset="sloppy", action="say",
                                params={"text": "x" * (MAX_PARAMS_CHARS - 20)}))
    with pytest.raises(CallError, match=r"at most 32,000 so that an approver can read"):
        catalog.resolve(Call(id="2", toolset="sloppy", action="say",
                             params={"text": "x" * MAX_PARAMS_CHARS}))


def test_a_redis_key_longer_than_512_characters_is_refused():
    catalog = Catalog(TOOLSETS, {"redis": RedisConfig()})
    with pytest.raises(CallError, match=r"keys\.0: String should have at most 512 characters"):
        catalog.resolve(Call(id="1", toolset="redis", action="del",
                             params={"keys": ["a" * 3000, "prod:important"]}))
