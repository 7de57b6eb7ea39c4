"""The policy's ``limits``: run rate limits and LLM budgets, judged from counts (one table)."""

import pytest

import yaml

from graph.policy import PolicyError, parse_policy
from graph.policy.limits import compile_limits
from graph.policy.schema import PolicyFile

LIMITS = """\
version: 1
limits:
  runs_per_user: 3/10m
  runs_per_channel: 50/1h
  llm_per_run: {tokens: 5000, usd: 0.25}
  llm_per_channel_per_day: {usd: 10}
"""


COMPILED = parse_policy(LIMITS).limits


def test_every_limit_is_accepted_and_compiled():
    assert COMPILED == compile_limits(PolicyFile.model_validate(yaml.safe_load(LIMITS)).limits)
    assert (COMPILED.runs_per_user.shown, COMPILED.runs_per_channel.shown) == ("3 per 10m",
                                                                             "50 per 1h")
    assert COMPILED.llm_per_channel_per_day.usd == 10


@pytest.mark.parametrize("user_runs, channel_runs, refusal", [
    (0, 0, None),
    (2, 49, None),
    (3, 0, "<@U1> has started 3 runs in the last 10m; the policy allows 3 per 10m per person. "
           "Nothing was started; try again later."),
    (0, 50, "#ops has started 50 runs in the last 1h; the policy allows 50 per 1h per channel. "
            "Nothing was started; try again later."),
])
def test_run_rate_limits(user_runs, channel_runs, refusal):
    assert COMPILED.run_refusal(user_runs=user_runs, channel_runs=channel_runs, user="U1",
                                channel_shown="#ops") == refusal


@pytest.mark.parametrize("usage, run_cap, channel_cap", [
    ({}, "", ""),
    ({"total_tokens": 4999, "input_tokens": 4999}, "", ""),
    ({"total_tokens": 5000, "input_tokens": 5000}, "LLM budget per run (5,000 tokens)", ""),
    # gpt-4o-mini: $0.15 per million input tokens; $0.25 is 1,666,667 of them
    ({"total_tokens": 4000, "input_tokens": 2_000_000}, "LLM budget per run ($0.25)", ""),
    ({"input_tokens": 70_000_000}, "LLM budget per run ($0.25)",
     "LLM budget per channel per day ($10)"),
])
def test_llm_budgets(usage, run_cap, channel_cap):
    limits = COMPILED
    assert limits.run_cap(usage, "gpt-4o-mini") == run_cap
    assert limits.channel_cap(usage, "gpt-4o-mini") == channel_cap


def test_no_limits_section_limits_nothing():
    limits = parse_policy("version: 1\n").limits
    assert limits.run_refusal(user_runs=10**6, channel_runs=10**6, user="U1",
                              channel_shown="#ops") is None
    assert limits.run_cap({"total_tokens": 10**9}, "gpt-4o-mini") == ""


def test_a_dollar_budget_for_a_model_without_a_price_counts_tokens_only():
    limits = parse_policy("version: 1\nlimits:\n  llm_per_run: {usd: 0.01}\n").limits
    assert limits.run_cap({"total_tokens": 10**9, "input_tokens": 10**9}, "my-local-model") == ""


@pytest.mark.parametrize("section, error", [
    ("runs_per_user: 20", "limits.runs_per_user: `20` is not a rate; write how many per how "
                          "long, e.g. 20/1h or 5/10m (1-100000 per 1m-7d)"),
    ("runs_per_channel: 5/30s", "limits.runs_per_channel: `5/30s` is not a rate"),
    ("llm_per_run: {}", "limits.llm_per_run: a budget needs `tokens`, `usd` or both"),
    ("llm_per_run: {usd: -1}", "limits.llm_per_run.usd: Input should be greater than 0"),
    ("per_user: 1/1h", "limits.per_user: unknown key `per_user`"),
])
def test_bad_limits_are_sentences_with_lines(section, error):
    with pytest.raises(PolicyError) as caught:
        parse_policy(f"version: 1\nlimits:\n  {section}\n")
    assert str(caught.value).startswith(f"policy.yml:3: {error}")


@pytest.mark.parametrize("spent, refusal", [
    ({}, None),
    ({"input_tokens": 60_000_000, "total_tokens": 60_000_000}, None),  # $9 of $10
    ({"input_tokens": 70_000_000, "total_tokens": 70_000_000},
     "#ops has used its LLM budget for today ($10; the policy's budget per channel per day, "
     "counted from midnight UTC). Nothing was started; typed commands still work, or ask "
     "again after midnight UTC."),
])
def test_a_channel_over_its_daily_llm_budget_starts_no_llm_run(spent, refusal):
    assert COMPILED.llm_refusal(spent, "gpt-4o-mini", "#ops") == refusal
    assert parse_policy("version: 1\n").limits.llm_refusal(spent, "gpt-4o-mini", "#ops") is None
