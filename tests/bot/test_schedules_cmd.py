"""``opsbot schedules check FILE`` and the ``/ops schedules`` listing."""

from __future__ import annotations

from datetime import UTC, datetime

from bot import messages
from bot.cli import main
from graph.records import ScheduleRow
from graph.schedules import parse_schedules

GOOD = """\
schedules:
  - name: cache-memory
    cron: "*/15 * * * *"
    timezone: Europe/Paris
    channel: C0OPS
    command: redis info section=memory
    identity: U0REQ
    post: on_change
"""


def test_check_says_ok_with_the_next_fire_time(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    path = tmp_path / "schedules.yml"
    path.write_text(GOOD)
    assert main(["schedules", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 1 schedule\n") and "cache-memory: */15 * * * * (Europe/Paris)" in out


def test_check_names_the_line_of_each_problem(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    path = tmp_path / "schedules.yml"
    path.write_text(GOOD.replace("*/15 * * * *", "*/15 * *") + GOOD.replace("cache-memory", "b")
                    .removeprefix("schedules:\n").replace("identity: U0REQ", "identity: x"))
    assert main(["schedules", "check", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{path}:3: schedules[0].cron: `*/15 * *` is not a cron expression")
    assert err[1].startswith(f"{path}:14: schedules[1].identity: `x` is not a Slack user id")
    path.write_text(GOOD.replace("info section", "inf section"))
    assert main(["schedules", "check", str(path)]) == 1
    assert capsys.readouterr().err.startswith(
        f"{path}:6: schedules[0].command: `redis` has no action `inf`")


def test_the_listing_shows_last_result_and_next_fire_time():
    (schedule,) = parse_schedules(GOOD)
    now = datetime(2026, 7, 1, 12, 1, tzinfo=UTC)
    row = ScheduleRow(name="cache-memory", state="done", summary="done: used_memory:1M",
                      reported_at=datetime(2026, 7, 1, 12, 0, tzinfo=UTC))
    text = messages.schedules_list((schedule,), {"cache-memory": row}, now)
    assert "*cache-memory* `*/15 * * * *` (Europe/Paris) in <#C0OPS> as <@U0REQ>" in text
    assert "done: used_memory:1M" in text and "posts on_change" in text
    assert f"<!date^{int(datetime(2026, 7, 1, 12, 15, tzinfo=UTC).timestamp())}^" in text
    assert "not run yet" in messages.schedules_list((schedule,), {}, now)
    assert messages.schedules_list((), {}, now) == messages.NO_SCHEDULES
