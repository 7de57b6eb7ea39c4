"""What each GitHub action does, through PyGithub, once ``tools.github`` has a repository.

Each public function is an action body ``(repository, params, invocation) -> ToolResult``;
``tools.github._api`` wraps it into the action's ``run`` (client, token, error mapping). Split
from ``tools/github.py`` so that module stays the declarative part policy reads: config,
params, tiers, summaries, targets.
"""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING, Any

from tools import github_change as change
from tools.base import ToolResult

if TYPE_CHECKING:
    from tools.github import (
        CommitsParams,
        FileParams,
        IssueParams,
        MergeParams,
        PrParams,
        PrsParams,
        RepoParams,
        RerunParams,
        RevertParams,
        RunsParams,
    )

MAX_FILE_CHARS = 20_000
MAX_FILES = 100
FAILED = change.FAILED


def _day(when: Any) -> str:
    return when.strftime("%Y-%m-%d %H:%M") if when else "?"


def repo(r: Any, p: RepoParams, inv: str) -> ToolResult:
    data = {
        "full_name": r.full_name,
        "default_branch": r.default_branch,
        "private": r.private,
        "open_issues": r.open_issues_count,
        "pushed_at": _day(r.pushed_at),
        "url": r.html_url,
    }
    lines = [f"{r.full_name}: {r.description or '(no description)'}"]
    lines += [f"{k.replace('_', ' ')}: {v}" for k, v in data.items() if k != "full_name"]
    return ToolResult.ok(inv, "\n".join(lines), data)


def _pr_row(pull: Any) -> dict[str, Any]:
    return {
        "number": pull.number,
        "title": pull.title,
        "author": pull.user.login,
        "head": pull.head.ref,
        "base": pull.base.ref,
        "draft": bool(pull.draft),
        "url": pull.html_url,
    }


def prs(r: Any, p: PrsParams, inv: str) -> ToolResult:
    pulls = r.get_pulls(state="open", sort="created", direction="desc", **_given(base=p.base))
    rows = [_pr_row(pull) for pull in islice(pulls, p.limit)]
    if not rows:
        return ToolResult.no_data(inv, "No open pull requests.")
    lines = [
        f"#{x['number']} {x['title']} ({x['head']} → {x['base']}) by @{x['author']}"
        + (" [draft]" if x["draft"] else "")
        for x in rows
    ]
    return ToolResult.ok(inv, "\n".join(lines), rows)


def _given(**kwargs: Any) -> dict[str, Any]:
    """Only the optional arguments that were given (PyGithub wants them absent, not None)."""
    return {k: v for k, v in kwargs.items() if v is not None}


def pr(r: Any, p: PrParams, inv: str) -> ToolResult:
    pull = r.get_pull(p.number)
    state = "merged" if pull.merged else pull.state
    files = [
        {"file": f.filename, "status": f.status, "+": f.additions, "-": f.deletions}
        for f in islice(pull.get_files(), MAX_FILES)
    ]
    checks = change.check_state(r, pull.head.sha, None)
    data = _pr_row(pull) | {"state": state, "head_sha": pull.head.sha, "files": files, **checks}
    verdicts = ", ".join(f"{c['name']}={c['state']}" for c in checks["checks"])
    lines = [
        f"#{pull.number} {pull.title} [{state}] by @{data['author']}: "
        f"{data['head']} → {data['base']}",
        f"head {pull.head.sha[:7]}; checks {checks['verdict']}: {verdicts}",
        f"{len(files)} file(s) changed:",
        *(f"  {f['status']:<8} {f['file']} (+{f['+']} -{f['-']})" for f in files),
    ]
    return ToolResult.ok(inv, "\n".join(lines), data)


def commits(r: Any, p: CommitsParams, inv: str) -> ToolResult:
    branch = p.branch or r.default_branch
    rows = [
        {
            "sha": c.sha,
            "author": c.commit.author.name,
            "date": _day(c.commit.author.date),
            "message": (c.commit.message or "").partition("\n")[0],
        }
        for c in islice(r.get_commits(sha=branch), p.limit)
    ]
    if not rows:
        return ToolResult.no_data(inv, f"No commits on `{branch}`.")
    lines = [f"{c['sha'][:7]} {c['date']} {c['author']}: {c['message']}" for c in rows]
    return ToolResult.ok(inv, "\n".join(lines), rows)


def runs(r: Any, p: RunsParams, inv: str) -> ToolResult:
    found = r.get_workflow_runs(**_given(branch=p.branch, status=p.status))
    rows = [
        {
            "id": w.id,
            "name": w.name,
            "number": w.run_number,
            "status": w.status,
            "conclusion": w.conclusion,
            "branch": w.head_branch,
            "sha": w.head_sha,
            "event": w.event,
            "url": w.html_url,
        }
        for w in islice(found, p.limit)
    ]
    if not rows:
        return ToolResult.no_data(inv, "No workflow runs match.")
    lines = [
        f"{w['id']} {w['name']} #{w['number']} {w['status']}/{w['conclusion'] or '-'} "
        f"on {w['branch']} @{w['sha'][:7]} ({w['event']})"
        for w in rows
    ]
    return ToolResult.ok(inv, "\n".join(lines), rows)


def file(r: Any, p: FileParams, inv: str) -> ToolResult:
    found = r.get_contents(p.path, **_given(ref=p.ref))
    if isinstance(found, list):
        names = sorted(f"{c.name}/" if c.type == "dir" else c.name for c in found)
        return ToolResult.ok(inv, f"{p.path} is a directory:\n" + "\n".join(names), names)
    if found.encoding != "base64":
        return ToolResult.fail(inv, f"`{p.path}` is too large to read through the API.")
    try:
        text = found.decoded_content.decode()
    except UnicodeDecodeError:
        return ToolResult.fail(inv, f"`{p.path}` is a binary file; opsbot only shows text.")
    more = len(text) - MAX_FILE_CHARS
    note = f"\n… ({more} more characters)" if more > 0 else ""
    return ToolResult.ok(inv, text[:MAX_FILE_CHARS] + note)


def rerun(r: Any, p: RerunParams, inv: str) -> ToolResult:
    run = r.get_workflow_run(p.run_id)
    if run.status != "completed":
        return ToolResult.fail(inv, f"Run {p.run_id} is still {run.status}; wait for it to end.")
    if p.failed_only and run.conclusion not in FAILED:
        why = f"Run {p.run_id} ended `{run.conclusion}`: it has no failed jobs to re-run."
        return ToolResult.fail(inv, why)
    what = "rerun-failed-jobs" if p.failed_only else "rerun"
    r.requester.requestJsonAndCheck("POST", f"{run.url}/{what}")
    return ToolResult.ok(
        inv, f"Re-running {run.name} run {p.run_id}: {run.html_url}", {"run_id": p.run_id}
    )


def _blobs(tree: Any) -> dict[str, tuple[str, str]]:
    """path → (blob sha, mode) for every file in a recursively fetched tree."""
    return {e.path: (e.sha, e.mode) for e in tree.tree if e.type == "blob"}


def revert(r: Any, p: RevertParams, inv: str) -> ToolResult:
    """Undo the PR's file changes on top of the base branch tip, if nothing touched them since.

    The PR's change is the landed commit against the base it landed on (``_landed_on``); a file
    changed again after the merge makes it refuse rather than guess at a three-way merge.
    """
    pull = r.get_pull(p.number)
    if not pull.merged:
        return ToolResult.fail(
            inv, f"PR #{p.number} is not merged; only a merged PR can be reverted."
        )
    landed = r.get_git_commit(pull.merge_commit_sha)
    tip = r.get_git_commit(r.get_git_ref(f"heads/{pull.base.ref}").object.sha)
    commits = (landed, _landed_on(pull, landed), tip)
    trees = [r.get_git_tree(c.tree.sha, recursive=True) for c in commits]
    merged, before, now = (_blobs(t) for t in trees)
    changed = sorted(k for k in merged.keys() | before.keys() if merged.get(k) != before.get(k))
    if not changed:
        return ToolResult.no_data(
            inv, f"PR #{p.number}'s merge changed no files; there is nothing to revert.")
    if all(now.get(k) == before.get(k) for k in changed):
        return ToolResult.no_data(inv, f"PR #{p.number} is already reverted on `{pull.base.ref}`.")
    moved = [k for k in changed if now.get(k) != merged.get(k)]
    if moved:
        why = f"{', '.join(moved)} changed on `{pull.base.ref}` after the merge. Revert it by hand."
        return ToolResult.fail(inv, f"Cannot revert PR #{p.number} cleanly: {why}")
    tree = r.create_git_tree([_undo(k, merged, before) for k in changed], base_tree=trees[-1])
    return _open_revert(r, p, inv, pull, tip, tree, changed)


def _landed_on(pull: Any, landed: Any) -> Any:
    """The base commit a merged PR landed on.

    A merge commit's or a squash commit's first parent; for a rebase merge (one parent, several
    PR commits) the commit below the replayed ones, recognised by their messages in order.
    """
    first = landed.parents[0]
    if len(landed.parents) > 1 or pull.commits <= 1:
        return first
    messages = [c.commit.message for c in pull.get_commits()]
    chain, below = [landed.message], first
    for _ in messages[1:]:
        if not below.parents:
            return first
        chain.append(below.message)
        below = below.parents[0]
    return below if chain[::-1] == messages else first


def _undo(path: str, merged: dict[str, tuple[str, str]], before: dict[str, tuple[str, str]]):
    from github import InputGitTreeElement

    sha, mode = before.get(path, (None, merged[path][1]))
    return InputGitTreeElement(path, mode, "blob", sha=sha)


def _open_revert(r: Any, p: RevertParams, inv: str, pull: Any, tip: Any, tree: Any, changed):
    message = f'Revert "{pull.title}"\n\nThis reverts #{p.number} (merge {pull.merge_commit_sha}).'
    r.create_git_ref(f"refs/heads/{p.head}", r.create_git_commit(message, tree, [tip]).sha)
    body = f"Reverts #{p.number}. Opened by opsbot as a draft: review it, then merge it yourself."
    title = f'Revert "{pull.title}"'
    draft = r.create_pull(base=pull.base.ref, head=p.head, title=title, body=body, draft=True)
    data = {"number": draft.number, "url": draft.html_url, "branch": p.head, "files": changed}
    return ToolResult.ok(
        inv, f"Opened draft PR #{draft.number} reverting #{p.number}: {draft.html_url}", data
    )


def merge(r: Any, p: MergeParams, inv: str) -> ToolResult:
    pull = r.get_pull(p.number)
    refusal = None
    if pull.merged or pull.state != "open":
        refusal = f"PR #{p.number} is {'already merged' if pull.merged else 'closed'}."
    elif pull.base.ref != p.base:
        refusal = f"PR #{p.number} targets `{pull.base.ref}`, not `{p.base}` as approved."
    elif p.sha and not pull.head.sha.startswith(p.sha):
        refusal = f"PR #{p.number} moved to {pull.head.sha[:7]} since it was approved."
    if refusal is None and not p.ignore_checks:
        refusal = change.merge_refusal(change.check_state(r, pull.head.sha, pull.base.ref),
                                       p.number)
    if refusal:
        return ToolResult.fail(inv, refusal)
    status = pull.merge(merge_method=p.method, sha=pull.head.sha)
    data = {"sha": status.sha, "merged": status.merged}
    return ToolResult.ok(inv, f"Merged PR #{p.number} into `{p.base}` ({status.sha[:7]}).", data)


def merge_preview(r: Any, p: MergeParams, inv: str) -> ToolResult:
    """What the merge approver reads: the PR, its mergeability and its checks."""
    pull = r.get_pull(p.number)
    found = change.check_state(r, pull.head.sha, pull.base.ref)
    lines = [f"#{pull.number} {pull.title}: {pull.head.ref} → {pull.base.ref} "
             f"({pull.commits} commit(s))",
             change.describe(found)]
    if found["verdict"] != "passing":
        lines.append("Merging now will be refused" + (
            " (ignore_checks is set: it will merge anyway)" if p.ignore_checks else "") + ".")
    return ToolResult.ok(inv, "\n".join(lines), found)


def issue(r: Any, p: IssueParams, inv: str) -> ToolResult:
    opened = r.create_issue(title=p.title, body=p.body, labels=p.labels)
    data = {"number": opened.number, "url": opened.html_url}
    return ToolResult.ok(inv, f"Opened issue #{opened.number}: {opened.html_url}", data)
