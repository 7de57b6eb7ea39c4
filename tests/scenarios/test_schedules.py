"""Schedules end to end: seconds-resolution schedules fire real runs (sandboxed ``redis``
actions, policy, reports in the Slack emulator).

* In one process: ``on_change`` posts only when the result changed; a schedule whose identity
  may not request a tier-3 action gets the policy's sentence in its report; ``/ops schedules``
  lists the last result and the next fire time.
* Two all-in-one ``opsbot serve`` processes on one PostgreSQL: every tick fires exactly once.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter

import psycopg
import pytest

from graph.records.base import RunFilter
from graph.schedules.surface import digest
from graph.surface import Report
from tests.fakes.slack import SlackEmulator
from tests.scenarios.harness import POLICY, REQUESTER, RUN_ID, harness, settings_for
from tests.scenarios.process import ROOT, BotProcesses, bot_env, bot_processes  # noqa: F401

pytestmark = pytest.mark.docker
OUTSIDER = "UBOT0"
GATED = POLICY + "requesters: {groups: [sre], from_tier: 3}\n"
SCHEDULES = f"""\
schedules:
  - name: watch
    cron: "* * * * * */3"
    channel: C0OPS
    command: redis get sched:k
    identity: {REQUESTER}
    post: on_change
  - name: forbidden
    cron: "* * * * * */5"
    channel: C0OPS
    command: redis del sched:keep
    identity: {OUTSIDER}
    post: on_failure
"""


def posts(h, text: str) -> list:
    return [m for m in h.top_level() if text in m.text]


async def results(h, name: str) -> list[str]:
    """The digests of the schedule's reported results, in the order they were reported."""
    rt = h.bot.runtime
    listing = await rt.records.runs.listing(RunFilter(source="schedule", limit=1000))
    ids = {r.run.run_id for r in listing if r.run.task.schedule.name == name}
    rows = [r for r in reversed(await rt.audit.rows(("report",), limit=1000)) if r["run_id"] in ids]
    return [digest(Report(run_id=r["run_id"], state=r["data"]["state"], headline="",
                          calls=r["data"]["calls"])) for r in rows]


def changes(seen: list[str]) -> int:
    return sum(1 for i, d in enumerate(seen) if i == 0 or d != seen[i - 1])


async def settled(h, name: str, text: str) -> tuple[int, int]:
    """(posts of the schedule, changes in its results), read while no run reported between."""
    while True:
        before = await results(h, name)
        shown = len(posts(h, text))
        if await results(h, name) == before:
            return shown, changes(before)


async def reported(h, name: str, count: int, timeout: float = 90) -> None:
    async def enough() -> bool:
        return len(await results(h, name)) >= count
    await h.slack.wait_for(enough, timeout)


async def test_scheduled_runs_post_as_their_rule_says(slack_emulator: SlackEmulator, redis_server,
                                                      redis_db, sandbox_image, tmp_path):
    redis_db.set("sched:k", "first")
    redis_db.set("sched:keep", "1")
    data = tmp_path / "data"
    data.mkdir()
    (data / "schedules.yml").write_text(SCHEDULES)
    settings = settings_for(slack_emulator, redis_server.url, data, GATED,
                            schedules=data / "schedules.yml")
    async with harness(settings, slack_emulator) as h:
        watch = "redis get sched:k"
        first = await h.slack.wait_for(lambda: [m for m in posts(h, watch) if "first" in
                                                " ".join(r.text for r in h.slack.thread(
                                                    h.channel, m.ts))], 90)
        await reported(h, "watch", len(await results(h, "watch")) + 3)
        shown, changed = await settled(h, "watch", watch)
        assert shown == changed and shown < len(await results(h, "watch"))  # same: not posted

        redis_db.set("sched:k", "second")
        await h.slack.wait_for(lambda: [m for m in posts(h, watch) if m.ts != first[0].ts and
                                        "second" in " ".join(r.text for r in h.slack.thread(
                                            h.channel, m.ts))], 60)
        await reported(h, "watch", len(await results(h, "watch")) + 2)
        shown, changed = await settled(h, "watch", watch)
        assert shown == changed

        denied = await h.slack.wait_for(lambda: posts(h, "redis del"), 30)
        report = await h.report(denied[0].ts)
        assert "⛔" in report.text and "may request tier 3 sandbox-execute actions and above" \
            in report.text  # the policy's sentence, in the report
        run_id = RUN_ID.search(report.text).group(1)
        (policy,) = [r for r in await h.bot.runtime.audit.story(run_id) if r["kind"] == "policy"]
        assert policy["data"]["verdict"] == "deny" and policy["data"]["reason"].startswith(
            f"<@{OUTSIDER}> may not request `redis del`: only")
        assert redis_db.get("sched:keep") == "1"

        await h.command("schedules")
        listing = await h.slack.wait_for(lambda: [json.dumps(r.body) for r in h.slack.responses()
                                                  if "*Schedules:*" in json.dumps(r.body)])
        assert "*watch*" in listing[-1] and "posts on_change" in listing[-1]
        assert "posts on_failure" in listing[-1] and "next <!date^" in listing[-1]


EVERY_2S = f"""\
schedules:
  - name: tick
    cron: "* * * * * */2"
    channel: C0OPS
    command: redis get sched:k
    identity: {REQUESTER}
    post: always
"""


async def test_two_processes_fire_each_tick_once(bot_processes: BotProcesses,  # noqa: F811
                                                  slack_emulator: SlackEmulator, redis_server,
                                                  sandbox_image, postgres_database, tmp_path):
    schedules = tmp_path / "schedules.yml"
    schedules.write_text(EVERY_2S)
    shared = {"OPSBOT_DATABASE_URL": postgres_database, "OPSBOT_HEARTBEAT_S": "0.5",
              "OPSBOT_QUEUE_POLL_S": "0.2", "OPSBOT_SCHEDULES": str(schedules)}
    env = lambda name: bot_env(slack_emulator, tmp_path / name, redis_server.url,  # noqa: E731
                               sandbox_image, **shared)
    migrate = subprocess.run([sys.executable, "-m", "bot.cli", "db", "migrate"], env=env("m"),
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    await asyncio.gather(*(bot_processes.start(env(f"serve{i}")) for i in range(2)))

    def ticks() -> Counter:
        with psycopg.connect(postgres_database) as conn:
            rows = conn.execute("select ref->'task'->'schedule'->>'tick' from runs "
                                "where source = 'schedule'").fetchall()
        return Counter(r[0] for r in rows)

    await slack_emulator.wait_for(lambda: len(ticks()) >= 6, 90)
    fired = ticks()
    assert set(fired.values()) == {1}, fired  # no tick started twice
