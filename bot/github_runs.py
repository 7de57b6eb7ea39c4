"""GitHub webhook events (verified, parsed) in, runs out, in the channel the policy names.

The policy's ``github_repos`` says which repositories opsbot acts on and where each reports
(``reviews`` and ``failures`` switch the two kinds). A pull request opened or pushed to becomes
a review run (lane ``chat``, the policy's run limits apply: a push storm can't start unbounded
LLM runs); a failed check or workflow run on the default branch becomes an investigation (lane
``incident``), one per failing commit however many of its checks fail (claimed in the dedupe
records, so any ingress process may receive any of them). Either run reads GitHub only through
the connector's actions, under the same policy and approvals as everything else.
"""

from __future__ import annotations

import structlog

from bot.deps import BotDeps
from bot.github_webhooks import Failure, Review
from bot.incidents import alert_attached
from graph.task import Source, Task

log = structlog.get_logger("opsbot.github_runs")
GITHUB_USER = "GITHUB"


class GithubRuns:
    def __init__(self, deps: BotDeps, team: str = ""):
        self.deps = deps
        self.team = team

    def accept(self, event: Review | Failure) -> str | None:
        """Start handling ``event`` after the HTTP response; or why it is not acted on."""
        entry = self.deps.policy.github_repo(event.repo)
        if entry is None:
            return f"{event.repo} is not in the policy's github_repos"
        if isinstance(event, Review) and not entry.reviews:
            return f"reviews are off for {event.repo}"
        if isinstance(event, Failure) and not entry.failures:
            return f"failures are not investigated for {event.repo}"
        self.deps.spawn(self.start(event, entry.channel))  # failures are logged by spawn
        return None

    async def start(self, event: Review | Failure, channel: str) -> None:
        if isinstance(event, Failure) and not await self.deps.records.dedupe.first_time(event.key):
            found = await self.deps.records.runs.for_alert(event.alert.id)
            await alert_attached(self.deps, found[0].run_id if found else None, GITHUB_USER,
                                 incident=event.alert.id, via="github")
            return
        source = Source.WEBHOOK if isinstance(event, Review) else Source.ALERT
        await self.deps.submit(Task(source=source, team=self.team, channel=channel,
                                    user=GITHUB_USER, text=event.alert.title, alert=event.alert))
