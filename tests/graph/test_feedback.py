"""Feedback on run reports in both storage modes: one rating per person and run (a later click
replaces it), comments joined to the rating, each audited, ranked worst first."""

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from graph.feedback import NO_RATING, NO_RUN, Rating, comment, rate, worst_first
from graph.surface import RunRef
from graph.task import Source, Task


def run(run_id: str) -> RunRef:
    task = Task(source=Source.MENTION, team="T1", channel="C1", user="U1", text=run_id)
    return RunRef(run_id=run_id, task=task, thread_ts="1.0")


def counted(name: str, rating: str) -> float:
    return REGISTRY.get_sample_value(name, {"rating": rating}) or 0.0


async def test_ratings_and_comments_are_stored_audited_counted_and_ranked(records):
    for run_id in ("r-good", "r-bad", "r-mixed"):
        await records.runs.add(run(run_id))
    downs = counted("opsbot_feedback_total", "down")
    before = datetime.now(UTC) - timedelta(seconds=1)

    assert (await rate(records, "r-good", "U1", Rating.UP))[0]
    assert (await rate(records, "r-mixed", "U1", Rating.UP))[0]
    assert (await rate(records, "r-mixed", "U2", Rating.DOWN))[0]
    assert (await rate(records, "r-bad", "U1", Rating.UP))[0]
    assert (await rate(records, "r-bad", "U1", Rating.DOWN))[0]  # changed their mind
    assert (await rate(records, "r-bad", "U3", Rating.DOWN))[0]
    said = await comment(records, "r-bad", "U3", "  restarted the wrong container  ")
    assert "recorded" in said

    rows = await records.feedback.since(before)
    assert len(rows) == 5, "one rating per person and run"
    ranked = worst_first(rows)
    assert [(r.run_id, r.down, r.up) for r in ranked] == [
        ("r-bad", 2, 0), ("r-mixed", 1, 1), ("r-good", 0, 1)]
    assert ranked[0].comments == [("U3", "down", "restarted the wrong container")]
    assert counted("opsbot_feedback_total", "down") == downs + 3
    assert await records.feedback.since(datetime.now(UTC) + timedelta(seconds=5)) == []

    audit = await records.audit.rows(("feedback", "feedback.comment"), run_id="r-bad")
    assert sorted((r["kind"], r["actor"], r["data"]["rating"]) for r in audit) == [
        ("feedback", "U1", "down"), ("feedback", "U1", "up"), ("feedback", "U3", "down"),
        ("feedback.comment", "U3", "down")]


async def test_ratings_of_unknown_runs_and_comments_without_ratings_change_nothing(records):
    await records.runs.add(run("r-real"))
    assert await rate(records, "r-forged", "U1", Rating.DOWN) == (
        False, NO_RUN.format(run_id="r-forged"))
    assert await comment(records, "r-real", "U1", "no rating first") == NO_RATING.format(
        run_id="r-real")
    assert await records.feedback.since() == []
    refused = await records.audit.rows(("feedback.refused",))
    assert [r["data"]["run"] for r in refused] == ["r-forged"]
