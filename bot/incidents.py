"""Exactly one investigation per PagerDuty incident, whichever way the incident arrives.

The Slack post (in an incident channel) and the v3 webhook race. Both claim the incident id in
the persisted dedupe table; the first claim starts the run, everything later attaches to it.
A webhook waits a short grace period first, so that when PagerDuty also posts in Slack, the
investigation lands in that post's thread; with no post, it starts in the first incident
channel the policy names by id. Acknowledge / resolve update the run's status message; a
resolve stops a run that is still investigating.
"""

from __future__ import annotations

import asyncio

import structlog

from bot.deps import BotDeps
from bot.pagerduty import START_EVENTS, WebhookEvent
from graph.surface import RunState, StepState
from graph.task import Alert, Source, Task

log = structlog.get_logger("opsbot.incidents")
PAGERDUTY_USER = "PAGERDUTY"


class Incidents:
    def __init__(self, deps: BotDeps, team: str = "", grace_s: float = 5.0):
        self.deps = deps
        self.team = team
        self.grace_s = grace_s
        self._tasks: set[asyncio.Task[None]] = set()

    async def posted(self, alert: Alert, channel: str, ts: str, team: str) -> None:
        """PagerDuty's Slack app announced ``alert`` in ``channel`` (message ``ts``)."""
        if not await self._claim(alert.id):
            await self._attached(alert, channel, ts)
            return
        await self.deps.submit(Task(source=Source.ALERT, team=team, channel=channel,
                                    user=PAGERDUTY_USER, text=alert.title, thread_ts=ts,
                                    message_ts=ts, alert=alert))

    def webhook(self, event: WebhookEvent) -> None:
        """Handle a verified webhook after the HTTP response (PagerDuty wants 2xx in 5 s)."""
        task = asyncio.create_task(self._webhook(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _webhook(self, event: WebhookEvent) -> None:
        if event.type in START_EVENTS:
            await asyncio.sleep(self.grace_s)
            await self._start_from_webhook(event.alert)
        if event.status:
            await self._status(event)

    async def _start_from_webhook(self, alert: Alert) -> None:
        channel = self._default_channel()
        if channel is None:
            log.warning("no incident channel id in the policy; webhook incident not investigated",
                        incident=alert.id)
            return
        if await self._claim(alert.id):
            await self.deps.submit(Task(source=Source.ALERT, team=self.team, channel=channel,
                                        user=PAGERDUTY_USER, text=alert.title, alert=alert))

    async def _status(self, event: WebhookEvent) -> None:
        found = self.deps.run_store.for_alert(event.alert.id)
        if found is None:
            return
        run, state = found
        who = f" by {event.agent}" if event.agent else ""
        text = f"PagerDuty: incident {event.status}{who}"
        step = StepState.OK if event.status == "resolved" else StepState.RUNNING
        await self.deps.runs.annotate(run.run_id, "pagerduty", text, step)
        if event.status == "resolved" and state in (RunState.QUEUED, RunState.RUNNING,
                                                    RunState.WAITING):
            await self.deps.runs.end(run.run_id, f"incident resolved in PagerDuty{who}")

    async def _attached(self, alert: Alert, channel: str, ts: str) -> None:
        found = self.deps.run_store.for_alert(alert.id)
        run_id = found[0].run_id if found else None
        log.info("incident already under investigation", incident=alert.id, run_id=run_id)
        self.deps.runs.audit.record("alert.attached", run_id, PAGERDUTY_USER, incident=alert.id,
                                    channel=channel, ts=ts)

    async def _claim(self, incident: str) -> bool:
        """True for exactly one caller per incident, ever (runs outlive the dedupe window)."""
        if self.deps.run_store.for_alert(incident) is not None:
            return False
        return self.deps.dedupe.first_time(f"incident:{incident}")

    def _default_channel(self) -> str | None:
        for entry in self.deps.policy.incident_channels:
            if not entry.startswith("#") and "*" not in entry:
                return entry
        return None
