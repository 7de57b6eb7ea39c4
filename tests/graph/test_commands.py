"""The typed command language, from one table."""

import shlex

import pytest

from graph import commands
from graph.commands import (Cancel, FreeText, Help, ListRuns, ListSchedules, ParseError, RunAction,
                            parse)
from graph.help import help_text
from tools import TOOLSETS
from tools.catalog import Catalog
from tools.redis import RedisConfig

CATALOG = Catalog(TOOLSETS, {"redis": RedisConfig()})


@pytest.mark.parametrize(
    "text,expected",
    [
        ("", Help()),
        ("help", Help()),
        ("HELP redis", Help("redis")),
        ("runs", ListRuns()),
        ("cancel r-1234abcd", Cancel("r-1234abcd")),
        ("redis info", RunAction("redis", "info", {})),
        ("redis INFO section=memory", RunAction("redis", "info", {"section": "memory"})),
        ("redis get user:1", RunAction("redis", "get", {"key": "user:1"})),
        ('redis get "key with spaces"', RunAction("redis", "get", {"key": "key with spaces"})),
        ("redis del a b c", RunAction("redis", "del", {"keys": ["a", "b", "c"]})),
        ('redis del keys=["a","b"]', RunAction("redis", "del", {"keys": ["a", "b"]})),
        ("redis scan match=user:* limit=10", RunAction("redis", "scan", {"match": "user:*", "limit": "10"})),
        ("<@UBOT> redis info", RunAction("redis", "info", {})),
        ("redis get a&amp;b", RunAction("redis", "get", {"key": "a&b"})),
        ("redis get <https://x.example/a|x.example/a>", RunAction("redis", "get", {"key": "https://x.example/a"})),
        ("why is redis slow?", FreeText("why is redis slow?")),
        ("<@UBOT> what's eating memory on the cache?", FreeText("what's eating memory on the cache?")),
    ],
)
def test_parses(text, expected):
    assert parse(text, CATALOG) == expected


@pytest.mark.parametrize(
    "text,message",
    [
        ("rdis info", "Unknown command `rdis`. Did you mean `redis`?"),
        ("redis", "Which `redis` action? One of: `info`"),
        ("redis flsh", "`redis` has no action `flsh`. Did you mean `flushdb`?"),
        ("redis info extra", "`redis info` takes no bare values; use key=value"),
        ("redis get a b", "`redis get` got unexpected extra values: `b`."),
        ("redis get key=a key=b", "`key` is given twice."),
        ('redis get "open', "I couldn't split that into words"),
        ("redis del keys=[1,", "looks like JSON but isn't valid JSON"),
        ("cancel", "Usage: `cancel <run-id>`"),
        ("foo bar=1", "Unknown command `foo`."),
        ("x" * 5000, "That is 5,000 characters; opsbot reads at most 4,000."),
    ],
)
def test_rejects_with_a_specific_sentence(text, message):
    with pytest.raises(ParseError) as e:
        parse(text, CATALOG)
    assert message in str(e.value)


def test_unconfigured_toolset_is_explained():
    with pytest.raises(ParseError, match="not configured"):
        parse("redis info", Catalog(TOOLSETS, {}))


def test_run_action_text_round_trips():
    action = parse('redis get "a b"', CATALOG)
    assert parse(action.text, CATALOG) == action


def test_help_is_generated_from_the_toolsets():
    text = help_text(CATALOG)
    for action in ("info", "slowlog", "get", "scan", "del", "flushdb"):
        assert f"`redis {action}" in text
    assert "`redis get <key> [db=…]`" in text and "tier 4 production" in text
    detailed = help_text(CATALOG, "redis")
    assert "◦ `count`: How many slow log entries to return. (default 10)" in detailed
    assert help_text(CATALOG, "nope").startswith("No toolset `nope`.")


def test_clean_undoes_slack_markup():
    assert commands.clean("&lt;b&gt; <#C1|ops> <!here> <mailto:a@b.c|a@b.c>") == "<b>     mailto:a@b.c"


# property tests: any input is a command, a question or a sentence; never an exception ---------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from graph.policy import Channel, Decision, Policy, Requester, evaluate  # noqa: E402
from tools.catalog import Call  # noqa: E402

WORDS = ["help", "runs", "cancel", "redis", "github", "pulumi", "info", "get", "del", "scan",
         "flushdb", "slowlog", "section=memory", "keys=", "count=", "limit=", "db=", "match=*",
         "=", "[", "]", "{", "}", '"', "'", "\\", "<@U1>", "&amp;", "<https://x|y>", "\u202e",
         "\n", "\x00", "99999999999999999999", "-1", "null", "[1,2", '{"a":', "key=value"]
typed = st.lists(st.sampled_from(WORDS) | st.text(max_size=12), max_size=10).map(" ".join)


def outcome(text: str) -> object:
    """What opsbot makes of ``text``: a command (a RunAction also gets a policy decision) or
    the sentence of a ParseError."""
    try:
        command = parse(text, CATALOG)
    except ParseError as e:
        assert str(e) and "Traceback" not in str(e)
        return str(e)
    if isinstance(command, RunAction):
        call = Call(id="c1", toolset=command.toolset, action=command.action,
                    params=command.params)
        decision = evaluate(Policy(), CATALOG, call, Requester(user="U1"), Channel(id="C1"))
        assert isinstance(decision, Decision) and decision.reason
        return decision
    assert isinstance(command, (Help, ListRuns, ListSchedules, Cancel, FreeText))
    return command


@given(typed)
def test_any_typed_words_give_a_command_or_a_sentence(text):
    outcome(text)


@given(st.text(max_size=5000))
def test_any_text_gives_a_command_or_a_sentence(text):
    outcome(text)


BLANKS_AND_WORDS = st.lists(st.sampled_from(WORDS) | st.sampled_from([" ", "\t", "\r", "\n",
                                                                       "\x0b", "\x0c", "\u00a0",
                                                                       "\u2003", "#"])
                            | st.text(max_size=8), max_size=12).map("".join)


@given(BLANKS_AND_WORDS)
def test_words_are_split_exactly_as_shlex_splits_them(text):
    """The ack path's fast split (no quotes, no backslashes) gives shlex's words, blanks such
    as a vertical tab or a no-break space included (they are inside words for shlex)."""
    try:
        expected = shlex.split(text)
    except ValueError:
        with pytest.raises(ValueError):
            commands.words_of(text)
        return
    assert commands.words_of(text) == expected
