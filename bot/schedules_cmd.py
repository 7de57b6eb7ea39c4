"""``opsbot schedules check FILE``: validate a schedules file before deploying it.

Prints ``ok: N schedules`` with each one's next fire time and exit code 0, or every problem as
``file:line: path: sentence`` on stderr and exit code 1. Typed commands are parsed against the
registered connectors (with this environment's configuration where it has one), so an unknown
action or a bad parameter is caught here, not at the first tick.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from bot.connectors import connector_configs, install_shell
from bot.policy_cmd import explain_catalog
from bot.settings import Settings
from graph.schedules import ScheduleError, load_schedules
from tools.catalog import Catalog


def check(path: str, settings: Settings) -> int:
    try:
        schedules = load_schedules(path, _catalog(settings))
    except ScheduleError as e:
        print(e, file=sys.stderr)
        return 1
    now = datetime.now(UTC)
    print(f"ok: {len(schedules)} schedule{'' if len(schedules) == 1 else 's'}")
    for schedule in schedules:
        print(f"  {schedule.name}: {schedule.cron} ({schedule.timezone}), next "
              f"{schedule.next(now).isoformat()}, posts {schedule.post.value}")
    return 0


def _catalog(settings: Settings) -> Catalog:
    catalog = explain_catalog()
    for name, config in connector_configs(settings).items():
        catalog.install(catalog.toolsets[name], config)
    install_shell(settings, catalog)
    return catalog
