"""The run report's Block Kit builder: Slack's limits, the file fallback, untrusted text.

Every message built here is also checked by the Slack emulator's validator (the same rules
the emulator applies to ``chat.postMessage``), so a limit we get wrong fails here first.
"""

import re

import pytest

from bot.blocks import (
    ATTACHED,
    CALL_OUTPUT,
    MAX_BLOCKS,
    MESSAGE_BUDGET,
    SECTION,
    TEXT,
    escape,
    feedback_block,
    report_message,
    save_runbook_block,
    split,
)
from graph.surface import CallReport, Citation, Report, RunState
from tests.fakes.slack_blocks import block_errors


def report(answer: str = "Memory is fine.", calls: list[CallReport] | None = None,
           **more) -> Report:
    more.setdefault("draftable", True)
    return Report(run_id="r-0000beef", state=RunState.DONE, headline="why is redis slow?",
                  answer=answer, calls=calls if calls is not None else [info()], **more)


def info(output: str = "used_memory:1024", status: str = "ok", note: str = "") -> CallReport:
    return CallReport(summary="Read Redis INFO (memory)", invocation="INFO memory",
                      status=status, output=output, note=note)


def texts(blocks: list[dict]) -> list[str]:
    """What a report's blocks say (its buttons aside: feedback, "Save as runbook")."""
    return [b["text"]["text"] if "text" in b else b["elements"][0]["text"] for b in blocks
            if b["type"] not in ("context_actions", "actions")]


def size(blocks: list[dict]) -> int:
    return sum(len(t) for t in texts(blocks))


def assert_valid(message: dict) -> None:
    assert block_errors(message["blocks"]) == []
    assert len(message["blocks"]) <= MAX_BLOCKS + 2 and size(message["blocks"]) <= MESSAGE_BUDGET
    assert message["blocks"][-1] == feedback_block("r-0000beef"), "every report can be rated"
    assert len(message["text"]) <= TEXT


def test_a_small_report_is_one_message_exactly_like_this():
    message, full = report_message(report(
        calls=[info(), info("", "denied", "denied by <@UAPPR1>: not now")],
        citations=[Citation(title="Redis memory pressure", path="runbooks/redis-memory.md")],
        usage="1,234 tokens in 2 calls (gpt-4o-mini, ≈ $0.0004)"))
    assert full is None
    assert texts(message["blocks"]) == [
        ":white_check_mark: *Run `r-0000beef` done* — why is redis slow?",
        "Memory is fine.",
        "✅ *Read Redis INFO (memory)* — ok\n`INFO memory`\n```used_memory:1024```",
        "⛔ *Read Redis INFO (memory)* — denied _(denied by <@UAPPR1>: not now)_\n`INFO memory`",
        ("Runbooks: Redis memory pressure (`runbooks/redis-memory.md`) · LLM usage: 1,234 tokens "
         "in 2 calls (gpt-4o-mini, ≈ $0.0004)"),
    ]
    assert message["blocks"][-3]["type"] == "context"
    assert message["blocks"][-2] == save_runbook_block("r-0000beef"), "an answered run"
    assert_valid(message)


def test_save_as_runbook_is_offered_on_the_reports_the_graph_marks_draftable():
    """Which runs are worth a runbook is the graph's call (graph.memory.worth_remembering,
    tested in tests/graph/test_runbook_draft.py); the report shows the button where it said so."""
    def offered(**kw) -> bool:
        message, _ = report_message(report(**kw))
        return save_runbook_block("r-0000beef") in message["blocks"]

    assert offered() and not offered(draftable=False)


def test_a_long_call_output_is_clipped_in_the_message_and_attached_in_full():
    output = "\n".join(f"line {i}: " + "x" * 60 for i in range(200))
    message, full = report_message(report(calls=[info(output)]))
    assert_valid(message)
    call = texts(message["blocks"])[2]
    assert "… (truncated)" in call and len(call) < CALL_OUTPUT + 200
    assert texts(message["blocks"])[-1] == ATTACHED
    assert output in full


def test_a_huge_answer_is_split_then_attached():
    answer = "\n".join(f"finding {i}: " + "details " * 12 for i in range(400))  # ~45k chars
    message, full = report_message(report(answer=answer))
    assert_valid(message)
    assert texts(message["blocks"])[-1] == ATTACHED
    assert answer in full and "Read Redis INFO (memory)" in " ".join(texts(message["blocks"]))


def test_a_medium_answer_is_split_into_sections_at_line_breaks_without_a_file():
    answer = "\n".join(f"step {i}: " + "ok " * 20 for i in range(100))  # ~7k chars
    message, full = report_message(report(answer=answer, calls=[]))
    assert full is None
    parts = texts(message["blocks"])[1:]
    assert len(parts) == 3 and all(len(p) <= SECTION for p in parts)
    assert "\n".join(parts) == answer
    assert_valid(message)


def test_sixty_calls_fit_as_one_line_each_and_the_outputs_go_to_the_file():
    calls = [info(f"output {i} " + "z" * 300) for i in range(60)]
    message, full = report_message(report(calls=calls))
    assert_valid(message)
    assert all(f"output {i} " in full for i in range(60))
    assert texts(message["blocks"])[-1] == ATTACHED


@pytest.mark.parametrize("hostile", ["<!channel> wake up", "<https://evil.example|click me>",
                                     "<@U0BOSS> approve this", "a & b"])
def test_untrusted_output_and_answers_cannot_ping_or_link(hostile):
    message, _ = report_message(report(answer=hostile, calls=[info(hostile)]))
    for text in [*texts(message["blocks"]), message["text"]]:
        assert "<!channel>" not in text and "<https://evil" not in text and "<@U0BOSS>" not in text
    assert texts(message["blocks"])[1] == escape(hostile)


def test_split_never_cuts_an_escape_in_two():
    pieces = split("&amp;" * 1000, 3000)
    assert all(re.fullmatch(r"(&amp;)+", p) for p in pieces)
    assert "".join(pieces) == "&amp;" * 1000


def test_failed_and_cancelled_runs_say_so_in_the_title():
    failed = Report(run_id="r-1", state=RunState.FAILED, headline="internal error (ref `ab12`)")
    message, _ = report_message(failed)
    assert texts(message["blocks"]) == [":x: *Run `r-1` failed* — internal error (ref `ab12`)"]
    cancelled = Report(run_id="r-2", state=RunState.CANCELLED, headline="")
    assert texts(report_message(cancelled)[0]["blocks"])[0].startswith(
        ":heavy_multiplication_x: *Run `r-2` cancelled*")
