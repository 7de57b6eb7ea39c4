"""Exactly one investigation per PagerDuty incident, whichever way the incident arrives.

The Slack post (in an incident channel) and the v3 webhook race. Both claim the incident id in
the persisted dedupe table; the first claim starts the run, everything later (repeated posts,
redeliveries, re-triggers) attaches to it and is audited as ``alert.attached``.

A webhook ``incident.triggered`` for an incident without a run waits a short grace period
first, so that when PagerDuty also posts in Slack, the investigation lands in that post's
thread; with no post, it starts in the first incident channel the policy names by id. A
re-trigger of an incident that has a run is applied at once, in order with later events.

``acknowledged`` / ``resolved`` update the run's status message (also after the run ended); a
resolve stops a run that is still investigating, or has an ended one remembered again with its
resolution (``graph/memory.py``). Status events that arrive while a trigger is
still in its grace period are held and applied when the run starts, and an incident resolved
before its investigation started gets none.
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
LIVE = (RunState.QUEUED, RunState.RUNNING, RunState.WAITING)


class Incidents:
    """Turns PagerDuty's two ingress paths into one run per incident (see the module doc)."""

    def __init__(self, deps: BotDeps, team: str = "", grace_s: float = 5.0):
        self.deps = deps
        self.team = team
        self.grace_s = grace_s
        self._in_grace: set[str] = set()
        self._early: dict[str, WebhookEvent] = {}  # incident -> latest status before its run

    async def posted(self, alert: Alert, channel: str, ts: str, team: str) -> None:
        """PagerDuty's Slack app announced ``alert`` in ``channel`` (message ``ts``)."""
        if not await self._claim(alert.id):
            await self._attached(alert.id, "slack post", channel=channel, ts=ts)
            return
        await self._start(Task(source=Source.ALERT, team=team, channel=channel,
                               user=PAGERDUTY_USER, text=alert.title, thread_ts=ts,
                               message_ts=ts, alert=alert))

    def webhook(self, event: WebhookEvent) -> None:
        """Handle a verified webhook after the HTTP response (PagerDuty wants 2xx in 5 s)."""
        self.deps.spawn(self._webhook(event))  # failures are logged by spawn

    async def _webhook(self, event: WebhookEvent) -> None:
        if event.type in START_EVENTS:
            await self._triggered(event)
        elif event.status:
            await self._status(event)

    async def _triggered(self, event: WebhookEvent) -> None:
        incident = event.alert.id
        if await self.deps.records.runs.for_alert(incident) is not None:
            await self._start_from_webhook(event)  # a re-trigger: in order with what follows
            return
        self._in_grace.add(incident)
        try:
            await asyncio.sleep(self.grace_s)
            await self._start_from_webhook(event)
        finally:
            self._in_grace.discard(incident)
            self._early.pop(incident, None)

    async def _start_from_webhook(self, event: WebhookEvent) -> None:
        incident = event.alert.id
        channel = self._default_channel()
        if channel is None and await self.deps.records.runs.for_alert(incident) is None:
            log.warning("no incident channel id in the policy; webhook incident not investigated",
                        incident=incident)
            return
        if not await self._claim(incident):
            await self._attached(incident, "webhook", event=event.type)
            await self._status(event, "re-triggered")
            return
        await self._start(Task(source=Source.ALERT, team=self.team, channel=channel or "",
                               user=PAGERDUTY_USER, text=event.alert.title, alert=event.alert))

    async def _start(self, task: Task) -> None:
        incident = task.alert.id if task.alert else ""
        early = self._early.get(incident)
        if early is not None and early.status == "resolved":
            log.info("incident resolved before its investigation started", incident=incident)
            await self.deps.records.audit.record("alert.skipped", None, PAGERDUTY_USER, incident=incident,
                                        reason="resolved before the investigation started")
            return
        await self.deps.submit(task)
        early = self._early.pop(incident, None)  # including any that came in during submit
        if early is not None:
            await self._status(early)

    async def _status(self, event: WebhookEvent, label: str | None = None) -> None:
        incident = event.alert.id
        found = await self.deps.records.runs.for_alert(incident)
        if found is None:
            if incident in self._in_grace:
                self._early[incident] = event
            return
        run, _ = found
        who = f" by {event.agent}" if event.agent else ""
        await alert_status(self.deps, run.run_id, PAGERDUTY_USER, "pagerduty",
                           f"PagerDuty: incident {label or event.status}{who}",
                           f"incident resolved in PagerDuty{who}"
                           if event.status == "resolved" else None,
                           incident=incident, status=event.status, agent=event.agent)

    async def _attached(self, incident: str, via: str, **where: str) -> None:
        found = await self.deps.records.runs.for_alert(incident)
        await alert_attached(self.deps, found[0].run_id if found else None, PAGERDUTY_USER,
                             incident=incident, via=via, **where)

    async def _claim(self, incident: str) -> bool:
        """True for exactly one caller per incident, ever (runs outlive the dedupe window)."""
        if await self.deps.records.runs.for_alert(incident) is not None:
            return False
        return await self.deps.records.dedupe.first_time(f"incident:{incident}")

    def _default_channel(self) -> str | None:
        for entry in self.deps.policy.incident_channels:
            if not entry.startswith("#") and "*" not in entry:
                return entry
        return None


# shared by every alert source (PagerDuty above, Alertmanager in bot/alert_groups.py) ---------


async def alert_status(deps: BotDeps, run_id: str, actor: str, key: str, line: str,
                       resolved: str | None, **audit: str) -> None:
    """An alert's status changed: audit it, show ``line`` on the run's status message, and
    when it ``resolved`` (the reason), stop the run if it is still going, or else index it again
    in the memory of past incidents."""
    await deps.records.audit.record("alert.status", run_id, actor, **audit)
    step = StepState.OK if resolved else StepState.RUNNING
    await deps.runs.annotate(run_id, key, line, step)
    found = await deps.records.runs.get(run_id)
    if not resolved or found is None:
        return
    if found[1] in LIVE:
        await deps.runs.end(run_id, resolved)
    else:  # remembered again, now with its resolution
        await deps.runs.remember(found[0])


async def alert_attached(deps: BotDeps, run_id: str | None, actor: str, **what: str) -> None:
    """A repeat of an alert that already has its run: audited, nothing new starts."""
    log.info("alert already under investigation", run_id=run_id,
             alert=what.get("incident") or what.get("group"))
    await deps.records.audit.record("alert.attached", run_id, actor, **what)
