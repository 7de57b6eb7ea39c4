"""GitHub change control: what the agent may do to propose a change, and the merge gate.

Action bodies ``(repository, params, invocation) -> ToolResult`` (``tools.github._api`` wraps
them): comment on an issue or PR, create a branch, commit files or a patch to a branch, open a
PR, show a ref's checks, and the checks part of ``merge``. Nothing here ever writes to the
default branch: a branch, commit or PR head naming it is refused before any write.

The merge gate: the required checks are the branch protection's required status checks when
the base branch has them, else every check reported on the head. A required check that is
missing, queued, in progress or failed makes ``merge`` refuse with the list, unless the call
says ``ignore_checks`` (its target then carries ``checks: ignored`` so policy can deny it or ask
for more approvers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tools import github_patch
from tools.base import ToolResult

if TYPE_CHECKING:
    from tools.github import (
        BranchParams,
        ChecksParams,
        CommentParams,
        CommitParams,
        DraftPrParams,
        PullParams,
    )

PASSED = {"success", "neutral", "skipped"}
FAILED = {"failure", "timed_out", "cancelled", "action_required", "startup_failure", "error"}


def comment(r: Any, p: CommentParams, inv: str) -> ToolResult:
    made = r.get_issue(p.number).create_comment(p.body)
    data = {"id": made.id, "url": made.html_url}
    return ToolResult.ok(inv, f"Commented on #{p.number}: {made.html_url}", data)


def branch(r: Any, p: BranchParams, inv: str) -> ToolResult:
    refusal = _default_branch_refusal(r, p.branch, "create")
    if refusal:
        return ToolResult.fail(inv, refusal)
    start = p.from_ref or r.default_branch
    sha = _sha(r, start)
    r.create_git_ref(f"refs/heads/{p.branch}", sha)
    data = {"branch": p.branch, "sha": sha}
    return ToolResult.ok(inv, f"Created branch `{p.branch}` at {sha[:7]} (from `{start}`).", data)


def commit(r: Any, p: CommitParams, inv: str) -> ToolResult:
    refusal = _default_branch_refusal(r, p.branch, "commit to")
    if refusal:
        return ToolResult.fail(inv, refusal)
    sha = _tip(r, p.branch)
    if sha is None:
        return ToolResult.fail(inv, f"There is no branch `{p.branch}` in {r.full_name}: create "
                                    "it first (github branch). Nothing was committed.")
    tip = r.get_git_commit(sha)
    try:
        changes = p.files if p.files is not None else _patched(r, p.patch or "", tip.sha)
    except ValueError as e:
        return ToolResult.fail(inv, f"The patch was not applied: {e}. Nothing was committed.")
    tree = r.create_git_tree([_entry(path, text) for path, text in sorted(changes.items())],
                             base_tree=r.get_git_tree(tip.tree.sha))
    made = r.create_git_commit(p.message, tree, [tip])
    _move(r, p.branch, made.sha)
    data = {"branch": p.branch, "sha": made.sha, "files": sorted(changes)}
    return ToolResult.ok(inv, f"Committed {len(changes)} file(s) to `{p.branch}`: "
                              f"{made.sha[:7]} {p.message.splitlines()[0]}", data)


def pull(r: Any, p: PullParams, inv: str) -> ToolResult:
    refusal = _default_branch_refusal(r, p.head, "open a PR from")
    if refusal:
        return ToolResult.fail(inv, refusal)
    base = p.base or r.default_branch
    made = r.create_pull(base=base, head=p.head, title=p.title, body=p.body, draft=p.draft)
    data = {"number": made.number, "url": made.html_url, "head": p.head, "base": base}
    kind = "draft PR" if p.draft else "PR"
    return ToolResult.ok(inv, f"Opened {kind} #{made.number} `{p.head}` → `{base}`: "
                              f"{made.html_url}", data)


def draft_pr(r: Any, p: DraftPrParams, inv: str) -> ToolResult:
    """Branch, commit and draft PR in one action; again on the same branch, it commits what
    changed (nothing when the files are the same) and answers with the PR already open."""
    refusal = _default_branch_refusal(r, p.branch, "open a PR from")
    if refusal:
        return ToolResult.fail(inv, refusal)
    sha = _tip(r, p.branch)
    if sha is None:
        sha = _sha(r, r.default_branch)
        r.create_git_ref(f"refs/heads/{p.branch}", sha)
    head = r.get_git_commit(sha)
    tree = r.create_git_tree([_entry(path, text) for path, text in sorted(p.files.items())],
                             base_tree=r.get_git_tree(head.tree.sha))
    committed = tree.sha != head.tree.sha
    if committed:
        _move(r, p.branch, r.create_git_commit(p.title, tree, [head]).sha)
    pull = next(iter(r.get_pulls(state="open", head=f"{r.owner.login}:{p.branch}")), None)
    opened = pull is None
    if opened:
        pull = r.create_pull(base=r.default_branch, head=p.branch, title=p.title, body=p.body,
                             draft=True)
    data = {"number": pull.number, "url": pull.html_url, "branch": p.branch,
            "files": sorted(p.files), "committed": committed, "opened": opened}
    verb = "Opened draft PR" if opened else "Updated the open PR" if committed else "Already open:"
    return ToolResult.ok(inv, f"{verb} #{pull.number} `{p.branch}` → `{r.default_branch}`: "
                              f"{pull.html_url}", data)


def checks(r: Any, p: ChecksParams, inv: str) -> ToolResult:
    sha, base = _head(r, p.ref, p.number)
    found = check_state(r, sha, base)
    return ToolResult.ok(inv, describe(found), found)


def check_state(r: Any, sha: str, base: str | None) -> dict[str, Any]:
    """Every check on ``sha`` plus the verdict on the required ones (see the module docstring)."""
    commit = r.get_commit(sha)
    runs = {c.name: c.conclusion or c.status for c in commit.get_check_runs()}
    runs |= {s.context: s.state for s in commit.get_combined_status().statuses}
    required = _required(r, base) if base else None
    names = sorted(required) if required is not None else sorted(runs)
    states = {n: runs.get(n, "missing") for n in names}
    failing = sorted(n for n, s in states.items() if s in FAILED)
    pending = sorted(n for n, s in states.items() if s not in FAILED | PASSED)
    verdict = "failing" if failing else "pending" if pending else "passing"
    listed = [{"name": n, "state": s} for n, s in sorted(runs.items())]
    return {"sha": sha, "verdict": verdict, "required": required is not None, "failing": failing,
            "pending": pending, "checks": listed}


def describe(found: dict[str, Any]) -> str:
    which = "required checks" if found["required"] else "checks"
    lines = [f"{which} on {found['sha'][:7]}: {found['verdict']}"]
    if found["failing"]:
        lines.append("failing: " + ", ".join(found["failing"]))
    if found["pending"]:
        lines.append("pending: " + ", ".join(found["pending"]))
    lines += [f"  {c['name']}: {c['state']}" for c in found["checks"]]
    return "\n".join(lines)


def merge_refusal(found: dict[str, Any], number: int) -> str | None:
    if found["verdict"] == "passing":
        return None
    what = [f"failing: {', '.join(found['failing'])}"] if found["failing"] else []
    what += [f"pending: {', '.join(found['pending'])}"] if found["pending"] else []
    return (f"PR #{number} is not merged: its required checks are {found['verdict']} "
            f"({'; '.join(what)}). Wait for them, or ask for a merge with ignore_checks=true "
            "if policy allows it.")


def _required(r: Any, base: str) -> set[str] | None:
    from github import GithubException

    try:
        _, body = r.requester.requestJsonAndCheck(
            "GET", f"{r.url}/branches/{base}/protection/required_status_checks")
    except GithubException as e:
        if e.status == 404:  # no protection, or no required checks on it
            return None
        raise
    names = set(body.get("contexts") or []) | {c["context"] for c in body.get("checks") or []}
    return names or None


def _head(r: Any, ref: str | None, number: int | None) -> tuple[str, str | None]:
    if number is not None:
        pull = r.get_pull(number)
        return pull.head.sha, pull.base.ref
    return _sha(r, ref or r.default_branch), None


def _tip(r: Any, branch: str) -> str | None:
    """The commit a branch points at; None when there is no such branch.

    Refs are read and moved with paths under the repository's URL, never through the URL an
    answer names: in the sandbox the API is dialled at a forwarder (an IP literal's address,
    or another port), and PyGithub refuses to follow a URL off the host and port it dials."""
    from github import GithubException

    try:
        _, body = r.requester.requestJsonAndCheck("GET", f"{r.url}/git/ref/heads/{branch}")
    except GithubException as e:
        if e.status == 404:
            return None
        raise
    return body["object"]["sha"]


def _move(r: Any, branch: str, sha: str) -> None:
    r.requester.requestJsonAndCheck("PATCH", f"{r.url}/git/refs/heads/{branch}",
                                    input={"sha": sha, "force": False})


def _sha(r: Any, ref: str) -> str:
    """The commit SHA a branch, tag or SHA names (the lazy client would echo ``ref`` back)."""
    _, body = r.requester.requestJsonAndCheck("GET", f"{r.url}/commits/{ref}")
    return body["sha"]


def _default_branch_refusal(r: Any, name: str, doing: str) -> str | None:
    if name == r.default_branch:
        return (f"opsbot does not {doing} `{name}`, the default branch of {r.full_name}: "
                "changes go through a branch and a pull request.")
    return None


def _patched(r: Any, patch: str, sha: str) -> dict[str, str | None]:
    from github import GithubException

    changes: dict[str, str | None] = {}
    for file in github_patch.parse(patch):
        old = None
        if file.old is not None:
            try:
                old = r.get_contents(file.old, ref=sha).decoded_content.decode()
            except GithubException as e:
                raise ValueError(f"{file.old} cannot be read at {sha[:7]} ({e.status})") from None
        if file.old and file.new and file.old != file.new:
            changes[file.old] = None  # a rename
        changes[file.path] = github_patch.apply(old, file)
    return changes


def _entry(path: str, text: str | None):
    from github import InputGitTreeElement

    if text is None:
        return InputGitTreeElement(path, "100644", "blob", sha=None)
    return InputGitTreeElement(path, "100644", "blob", content=text)
