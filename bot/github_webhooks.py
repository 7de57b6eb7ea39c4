"""GitHub webhooks in: the signature check and the events opsbot acts on, as pure functions.

* ``X-Hub-Signature-256: sha256=<hex>`` is HMAC-SHA256 of the raw body with the webhook's
  secret (GitHub signs the exact bytes it sends; the body is verified before it is parsed).
* ``pull_request`` opened / synchronize (a push to the PR) → :class:`Review`.
* ``check_run`` / ``workflow_run`` completed with a failing conclusion on the repository's
  default branch → :class:`Failure` (one investigation per failing commit, ``key``).
* Anything else (``ping``, other actions, other branches, passing runs) → :class:`Ignored`,
  which says why.

Everything parsed here is untrusted: a PR title, a branch name or a check's output is written
by whoever can push. It becomes the quoted subject of a run (an :class:`~graph.task.Alert`),
never an instruction.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from graph.task import Alert

ORIGIN = "GitHub"
REVIEW_ACTIONS = ("opened", "synchronize")
FAILED = ("failure", "timed_out", "startup_failure")
REVIEW_REQUEST = ("review this GitHub pull request for the team: what changed, which changed "
                  "files are risky and why, and which checks fail; read it with the github pr "
                  "and github checks tools before you answer, and change nothing")
FAILURE_REQUEST = ("investigate this failed GitHub check on the repository's default branch: "
                   "what broke, since which commit, and what would fix it; read it with the "
                   "github runs, checks and commits tools")


class EventError(ValueError):
    """A signed body opsbot can't read as the event its header names; ``str(e)`` says why."""


@dataclass(frozen=True)
class Review:
    repo: str
    number: int
    alert: Alert


@dataclass(frozen=True)
class Failure:
    repo: str
    sha: str
    alert: Alert

    @property
    def key(self) -> str:
        """One investigation per failing commit (a workflow run and its check runs agree)."""
        return f"github:failure:{self.repo.lower()}:{self.sha}"


@dataclass(frozen=True)
class Ignored:
    reason: str


Event = Review | Failure | Ignored


def valid_signature(secret: str, body: bytes, header: str | None) -> bool:
    scheme, _, digest = (header or "").strip().partition("=")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return scheme == "sha256" and hmac.compare_digest(digest.encode(), expected.encode())


def parse(event: str, body: bytes) -> Event:
    try:
        data = json.loads(body)
        repo = str(data["repository"]["full_name"])
    except (ValueError, KeyError, TypeError):
        if event == "ping":
            return Ignored("ping")
        raise EventError(f"not a GitHub `{event[:40]}` event with a repository") from None
    readers = {"pull_request": _pull_request, "check_run": _check_run,
               "workflow_run": _workflow_run}
    reader = readers.get(event)
    if reader is None:
        return Ignored(f"`{event[:40]}` events are not acted on")
    try:
        return reader(data, repo)
    except (KeyError, TypeError, ValueError, AttributeError):  # untrusted JSON: any shape
        raise EventError(f"the `{event}` event lacks the fields GitHub always sends") from None


def _pull_request(data: dict[str, Any], repo: str) -> Event:
    action = str(data.get("action"))
    if action not in REVIEW_ACTIONS:
        return Ignored(f"pull_request `{action[:40]}` is not reviewed (only opened, synchronize)")
    pr = data["pull_request"]
    number = int(pr["number"])
    alert = Alert(
        id=f"{repo}#{number}@{str(pr['head']['sha'])[:12]}", origin=ORIGIN,
        request=REVIEW_REQUEST, title=f"{repo}#{number}: {_text(pr.get('title'), 300)}",
        service=repo, status=action, link=_text(pr.get("html_url"), 300),
        details={"repo": repo, "number": number, "author": _login(pr.get("user")),
                 "base": _text(pr["base"]["ref"], 200), "head": _text(pr["head"]["ref"], 200),
                 "head_sha": _text(pr["head"]["sha"], 40), "draft": bool(pr.get("draft")),
                 "body": _text(pr.get("body"), 2000)})
    return Review(repo, number, alert)


def _check_run(data: dict[str, Any], repo: str) -> Event:
    run = data["check_run"]
    branch = run.get("check_suite", {}).get("head_branch")
    why = _not_failed(data, run, branch)
    if why:
        return Ignored(why)
    output = run.get("output") or {}
    return _failure(repo, str(run["head_sha"]), f"check `{_text(run['name'], 100)}`", branch,
                    run.get("html_url"), {"conclusion": run["conclusion"],
                                          "output_title": _text(output.get("title"), 300),
                                          "output_summary": _text(output.get("summary"), 2000)})


def _workflow_run(data: dict[str, Any], repo: str) -> Event:
    run = data["workflow_run"]
    why = _not_failed(data, run, run.get("head_branch"))
    if why:
        return Ignored(why)
    return _failure(repo, str(run["head_sha"]), f"workflow `{_text(run['name'], 100)}`",
                    run.get("head_branch"), run.get("html_url"),
                    {"conclusion": run["conclusion"], "run_number": run.get("run_number"),
                     "event": _text(run.get("event"), 40)})


def _not_failed(data: dict[str, Any], run: dict[str, Any], branch: Any) -> str | None:
    """Why a completed-run event is not a failure on the default branch, or None."""
    if data.get("action") != "completed" or run.get("conclusion") not in FAILED:
        return f"not a failed run ({_text(data.get('action'), 20)}, " \
               f"{_text(run.get('conclusion'), 20)})"
    default = data["repository"].get("default_branch")
    if not default or branch != default:
        return f"failed on `{_text(branch, 100)}`, not on the default branch"
    return None


def _failure(repo: str, sha: str, what: str, branch: Any, link: Any,
             details: dict[str, Any]) -> Failure:
    alert = Alert(
        id=f"{repo}@{sha[:12]}", origin=ORIGIN, request=FAILURE_REQUEST,
        title=f"{what} failed on {repo} {_text(branch, 100)} ({sha[:7]})", service=repo,
        urgency="high", status="failed", link=_text(link, 300),
        details={"repo": repo, "branch": _text(branch, 100), "head_sha": sha[:40], **details})
    return Failure(repo, sha[:40], alert)


def _login(user: Any) -> str:
    return _text(user.get("login"), 100) if isinstance(user, dict) else ""


def _text(value: Any, limit: int) -> str:
    return str(value if value is not None else "")[:limit]
