"""Exactly one investigation per firing alert group (Alertmanager's ``groupKey``), across
every ingress process.

Alertmanager sends a group's notification when it starts firing, again every
``repeat_interval`` and whenever its alerts change, and once when it resolves. The first firing
notification claims the group's episode in the records (``records.alert_groups.open``: one
winner in any number of processes) and starts the run in the channel the policy's
``alert_routes`` pick by the group's common labels (else the first incident channel named by
id). Repeats while it fires are audited as ``alert.attached`` and shown on the run's status
message; a resolve updates the status message and stops a run still investigating, as a
PagerDuty resolve does (the shared helpers live in ``bot/incidents.py``). A group that fires
again after it resolved is a new episode, with a new run.

A resolve that lands between the claim and the run's submission (another process, or the same
one a moment later) marks the group resolved; the claimant finds that once its run is bound
and stops the run straight away.
"""

from __future__ import annotations

import structlog

from bot.alertmanager import GroupNotification
from bot.deps import BotDeps
from bot.incidents import alert_attached, alert_status
from graph.surface import RunRef, StepState
from graph.task import Source, Task

log = structlog.get_logger("opsbot.alert_groups")
ALERTMANAGER_USER = "ALERTMANAGER"
STEP = "alertmanager"


class AlertGroupRuns:
    """Alertmanager notifications (verified, parsed) in, one run per firing episode out."""

    def __init__(self, deps: BotDeps, team: str = ""):
        self.deps = deps
        self.team = team

    def received(self, note: GroupNotification) -> None:
        """Handle a notification after the HTTP response (Alertmanager times out and retries)."""
        self.deps.spawn(self.handle(note))  # failures are logged by spawn

    async def handle(self, note: GroupNotification) -> None:
        if note.firing:
            await self._firing(note)
        else:
            await self._resolved(note)

    async def _firing(self, note: GroupNotification) -> None:
        groups = self.deps.records.alert_groups
        if not await groups.open(note.key):
            group = await groups.get(note.key)
            run_id = group.run_id if group else None
            await alert_attached(self.deps, run_id, ALERTMANAGER_USER, group=note.alert.id,
                                 via="alertmanager", alerts=str(note.count))
            if run_id:
                await self.deps.runs.annotate(run_id, STEP, _firing_line(note),
                                              StepState.RUNNING)
            return
        channel = self._channel(note)
        if channel is None:
            await self._unrouted(note)
            return
        run = await self.deps.submit(Task(source=Source.ALERT, team=self.team, channel=channel,
                                          user=ALERTMANAGER_USER, text=note.alert.title,
                                          alert=note.alert))
        if not isinstance(run, RunRef):  # refused by the policy's limits: the next one may run
            await groups.resolve(note.key)
            return
        await groups.bind(note.key, run.run_id)
        group = await groups.get(note.key)
        if group is not None and not group.firing:  # resolved while the run was being submitted
            await self._ended(run.run_id, note)

    async def _resolved(self, note: GroupNotification) -> None:
        group = await self.deps.records.alert_groups.resolve(note.key)
        if group is None or not group.firing:
            log.info("resolved alert group without a firing episode", group=note.alert.id)
            return
        if group.run_id:
            await self._ended(group.run_id, note)

    async def _ended(self, run_id: str, note: GroupNotification) -> None:
        await alert_status(self.deps, run_id, ALERTMANAGER_USER, STEP,
                           f"Alertmanager: resolved ({note.count} alerts)",
                           "alert group resolved in Alertmanager", group=note.alert.id,
                           status="resolved")

    def _channel(self, note: GroupNotification) -> str | None:
        routed = self.deps.policy.alert_channel(note.labels)
        if routed is not None:
            return routed
        return next((c for c in self.deps.policy.incident_channels
                     if not c.startswith("#") and "*" not in c), None)

    async def _unrouted(self, note: GroupNotification) -> None:
        log.warning("no alert route or incident channel id in the policy; alert group not "
                    "investigated", group=note.alert.id)
        await self.deps.records.alert_groups.resolve(note.key)  # a later policy may route it
        await self.deps.records.audit.record("alert.skipped", None, ALERTMANAGER_USER,
                                             group=note.alert.id, reason="no channel routes it")


def _firing_line(note: GroupNotification) -> str:
    return f"Alertmanager: still firing ({note.count} alerts)"
