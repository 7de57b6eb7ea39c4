"""Feedback on run reports: was the answer any good?

Every final report carries 👍 / 👎 buttons (``bot/blocks.py``). A click is one rating per
person and run (a later click replaces theirs), recorded with its audit row in one transaction
and counted in metrics; a comment (the modal after a 👎) joins the rating. ``worst_first`` is
what ``opsbot feedback`` lists: the runs people rated worst, first.

Usage::

    recorded, sentence = await rate(records, "r-1a2b3c4d", "U123", Rating.DOWN)
    await comment(records, "r-1a2b3c4d", "U123", "it restarted the wrong container")
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum

from graph import metrics
from graph.records import Records
from graph.records.base import FeedbackRow
from tools.secrets import REDACTOR

NO_RUN = "There is no run `{run_id}` to rate; nothing was recorded."
THANKS = {"up": "Thanks! Your 👍 on run `{run_id}` is recorded.",
          "down": "Thanks — your 👎 on run `{run_id}` is recorded."}
NO_RATING = "Rate run `{run_id}` first; the comment was not recorded."
COMMENTED = "Thanks, your comment on run `{run_id}` is recorded."
COMMENT_CHARS = 2000


class Rating(StrEnum):
    UP = "up"
    DOWN = "down"


async def rate(records: Records, run_id: str, user: str, rating: Rating) -> tuple[bool, str]:
    """Record ``user``'s rating of the run's report: whether it was recorded, and the
    sentence to tell them."""
    async with records.transaction() as tx:
        if await tx.runs.row(run_id) is None:
            await tx.audit.record("feedback.refused", None, user, run=run_id[:40],
                                  reason="no such run")
            return False, NO_RUN.format(run_id=run_id[:40])
        await tx.feedback.rate(run_id, user, rating.value)
        await tx.audit.record("feedback", run_id, user, rating=rating.value)
    metrics.FEEDBACK.labels(rating.value).inc()
    return True, THANKS[rating.value].format(run_id=run_id)


async def comment(records: Records, run_id: str, user: str, text: str) -> str:
    """Attach ``user``'s comment to their rating of the run."""
    text = REDACTOR.redact(text.strip()[:COMMENT_CHARS])
    async with records.transaction() as tx:
        rating = await tx.feedback.comment(run_id, user, text)
        if rating is None:
            return NO_RATING.format(run_id=run_id)
        await tx.audit.record("feedback.comment", run_id, user, rating=rating, comment=text)
    metrics.FEEDBACK_COMMENTS.labels(rating).inc()
    return COMMENTED.format(run_id=run_id)


@dataclass
class RunFeedback:
    """Everything people said about one run."""

    run_id: str
    up: int = 0
    down: int = 0
    comments: list[tuple[str, str, str]] = field(default_factory=list)  # (user, rating, text)

    @property
    def score(self) -> int:
        return self.up - self.down


def worst_first(rows: list[FeedbackRow]) -> list[RunFeedback]:
    """Runs by score (👍 − 👎) ascending; more 👎 first among equals; then by run id."""
    runs: dict[str, RunFeedback] = defaultdict(lambda: RunFeedback(""))
    for row in rows:
        run = runs[row.run_id]
        run.run_id = row.run_id
        if row.rating == Rating.UP:
            run.up += 1
        else:
            run.down += 1
        if row.comment:
            run.comments.append((row.user, row.rating, row.comment))
    return sorted(runs.values(), key=lambda r: (r.score, -r.down, r.run_id))
