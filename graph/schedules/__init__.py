"""Schedules: checks opsbot starts on its own (``OPSBOT_SCHEDULES``), through the same policy,
approvals and reports as a person's runs.

- ``spec``: the file (name, cron with time zone, channel, command or question, identity,
  post), read with line-precise errors;
- ``scheduler``: firing each tick once across every process, and once after downtime;
- ``surface``: remembering each run's result and posting it as ``post`` says.
"""

from graph.schedules.scheduler import Scheduler, task_for
from graph.schedules.spec import Schedule, ScheduleError, load_schedules, parse_schedules
from graph.schedules.surface import ScheduledSurface

__all__ = ["Schedule", "ScheduleError", "ScheduledSurface", "Scheduler", "load_schedules",
           "parse_schedules", "task_for"]
