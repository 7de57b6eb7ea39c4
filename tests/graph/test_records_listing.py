"""What the web console reads, in both storage modes: runs listed newest first with filters
(channel, state, source, requester, time), a run's audit story, pending approvals."""

from datetime import UTC, datetime, timedelta

from graph.records.base import RunFilter
from graph.surface import RunRef, RunState
from graph.task import Source, Task


def run(run_id: str, channel: str, user: str, source: Source) -> RunRef:
    task = Task(source=source, team="T1", channel=channel, user=user, text=f"{run_id} text",
                thread_ts=f"{run_id[-1]}.0")
    return RunRef(run_id=run_id, task=task, thread_ts=task.thread_ts)


async def test_runs_are_listed_newest_first_with_filters(records):
    before = datetime.now(UTC) - timedelta(seconds=1)
    await records.runs.add(run("r-1", "C1", "U1", Source.SLASH))
    await records.runs.add(run("r-2", "C1", "U2", Source.MENTION))
    middle = datetime.now(UTC)
    await records.runs.add(run("r-3", "C2", "U1", Source.ALERT))
    await records.runs.set_state("r-2", RunState.DONE)

    def ids(listing):
        return [entry.run.run_id for entry in listing]

    assert ids(await records.runs.listing()) == ["r-3", "r-2", "r-1"]
    assert ids(await records.runs.listing(RunFilter(channel="C1"))) == ["r-2", "r-1"]
    assert ids(await records.runs.listing(RunFilter(state=RunState.DONE))) == ["r-2"]
    assert ids(await records.runs.listing(RunFilter(source="alert"))) == ["r-3"]
    assert ids(await records.runs.listing(RunFilter(requester="U1"))) == ["r-3", "r-1"]
    assert ids(await records.runs.listing(RunFilter(since=middle))) == ["r-3"]
    assert ids(await records.runs.listing(RunFilter(until=middle))) == ["r-2", "r-1"]
    assert ids(await records.runs.listing(RunFilter(requester="U1", channel="C1"))) == ["r-1"]
    assert ids(await records.runs.listing(RunFilter(limit=1))) == ["r-3"]
    assert ids(await records.runs.listing(RunFilter(run_id="r-2"))) == ["r-2"]
    assert ids(await records.runs.listing(RunFilter(channel="C9"))) == []
    (first,) = await records.runs.listing(RunFilter(requester="U2"))
    assert first.state is RunState.DONE and first.run.task.text == "r-2 text"
    assert before <= first.created_at <= first.updated_at <= datetime.now(UTC)
