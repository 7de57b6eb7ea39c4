"""AlertGroupRuns against the real records (both storage modes) with a recording stand-in for
the run manager: the orders of events a fleet of ingress processes can produce."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.alert_groups import AlertGroupRuns
from bot.alertmanager import GroupNotification, parse
from graph.policy import parse_policy
from graph.surface import RunRef, RunState
from graph.task import Task, new_run_id

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
POLICY = parse_policy("version: 1\nalert_routes:\n  - match: {team: payments}\n"
                      "    channel: C01PAYMENTS\n", "p.yml")


def note(name: str) -> GroupNotification:
    return parse((FIXTURES / f"alertmanager_{name}.json").read_bytes())


@dataclass
class Runs:
    """What AlertGroupRuns asks of the run manager, recorded."""

    records: object
    ended: list[tuple[str, str]] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)

    async def annotate(self, run_id, key, text, state) -> None:
        self.lines.append((run_id, text))

    async def end(self, run_id: str, reason: str) -> bool:
        self.ended.append((run_id, reason))
        await self.records.runs.set_state(run_id, RunState.CANCELLED)
        return True

    async def remember(self, run) -> None: ...


@dataclass
class Deps:
    records: object
    runs: Runs
    policy: object = field(default_factory=lambda: POLICY)
    during_submit: object = None  # a coroutine function run while the run is being submitted
    submitted: list[Task] = field(default_factory=list)

    def spawn(self, work) -> None:
        raise AssertionError("tests call handle() directly")

    async def submit(self, task: Task):
        self.submitted.append(task)
        if self.during_submit is not None:
            await self.during_submit()
        run = RunRef(run_id=new_run_id(), task=task)
        await self.records.runs.add(run, RunState.RUNNING)
        return run


@pytest.fixture
def deps(records) -> Deps:
    return Deps(records, Runs(records))


async def test_firing_repeat_resolve_refire(deps):
    groups = AlertGroupRuns(deps, team="T1")
    await groups.handle(note("payments_firing"))
    await groups.handle(note("payments_firing"))
    assert [t.channel for t in deps.submitted] == ["C01PAYMENTS"]
    await groups.handle(note("payments_resolved"))
    await groups.handle(note("payments_resolved"))  # Alertmanager may send it twice
    first = (await deps.records.runs.listing())[0].run.run_id
    assert deps.runs.ended == [(first, "alert group resolved in Alertmanager")]
    assert [text for _, text in deps.runs.lines] == [
        "Alertmanager: still firing (2 alerts)", "Alertmanager: resolved (2 alerts)"]
    await groups.handle(note("payments_firing"))
    assert len(deps.submitted) == 2  # a new episode


async def test_a_resolve_during_the_submit_stops_the_run_once_it_is_bound(deps):
    groups = AlertGroupRuns(deps, team="T1")
    deps.during_submit = lambda: groups.handle(note("payments_resolved"))  # another process
    await groups.handle(note("payments_firing"))
    [run] = await deps.records.runs.listing()
    assert deps.runs.ended == [(run.run.run_id, "alert group resolved in Alertmanager")]


async def test_a_resolve_of_an_unknown_group_and_an_unrouted_group_start_nothing(deps):
    groups = AlertGroupRuns(deps, team="T1")
    await groups.handle(note("payments_resolved"))
    await groups.handle(note("redis_firing"))  # team=cache: no route, no incident channel
    assert deps.submitted == [] and deps.runs.ended == []
    skipped = await deps.records.audit.rows(("alert.skipped",))
    assert [r["data"]["reason"] for r in skipped] == ["no channel routes it"]
    deps.policy = parse_policy("version: 1\nincident_channels: [C01INCIDENT]\n", "p.yml")
    await groups.handle(note("redis_firing"))  # routed now: the skip did not hold the group
    assert [t.channel for t in deps.submitted] == ["C01INCIDENT"]
