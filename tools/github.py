"""GitHub connector: read repositories, PRs, commits and CI runs; with approval, act on them.

Observe (tier 0): ``repo``, ``prs``, ``pr``, ``commits``, ``runs``, ``file``. Draft (tier 2):
``issue``, ``revert_pr`` (a draft PR that reverts a merged PR; never merged by opsbot).
Changes (tier 3, raised by policy for the default branch): ``rerun``, ``merge``.

The API is reached through PyGithub with retries and throttling off and short timeouts, so a
failing GitHub turns into an error result within seconds. The token is ``GITHUB_TOKEN`` from
opsbot's settings by default (``token_secret="static:GITHUB_TOKEN"``) or a Vault path
(``kv/data/github#token``); it arrives in ``ctx.secrets["github_token"]``.

Usage (what the sandbox entrypoint does)::

    action = TOOLSET.action("prs")
    action.run(action.params.model_validate({"repo": "acme/api"}), ctx)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import islice
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tools.base import Action, ActionContext, Endpoint, SecretRef, Target, Tier, ToolResult, Toolset
from tools.catalog import CallError

REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$"
REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$"
MAX_FILE_CHARS = 20_000
MAX_FILES = 100
FAILED = {"failure", "timed_out", "cancelled", "action_required", "startup_failure"}


def parse_secret_ref(name: str, ref: str) -> SecretRef:
    """``static:NAME`` (from opsbot's settings) or ``kv/data/<path>#<key>`` (from Vault)."""
    if ref.startswith("static:"):
        return SecretRef(name=name, path=ref, key=ref.removeprefix("static:"))
    path, _, key = ref.partition("#")
    return SecretRef(name=name, path=path, key=key)


def _check_secret_ref(ref: str | None) -> str | None:
    if ref is None or re.fullmatch(r"static:[A-Z][A-Z0-9_]*|[\w./-]+#[\w.-]+", ref):
        return ref
    raise ValueError("must look like static:GITHUB_TOKEN or kv/data/<path>#<key>")


class GitHubConfig(BaseModel):
    """Where the GitHub API is, where the token comes from, and the repos to assume."""

    model_config = ConfigDict(frozen=True)

    api_url: str = "https://api.github.com"
    token_secret: str | None = "static:GITHUB_TOKEN"
    default_repos: tuple[str, ...] = ()

    @field_validator("api_url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://api.github.com")
        if parts.username or parts.password:
            raise ValueError("must not contain credentials; the token comes from token_secret")
        return url.rstrip("/")

    _token_ref = field_validator("token_secret")(_check_secret_ref)

    @field_validator("default_repos")
    @classmethod
    def _repos(cls, repos: tuple[str, ...]) -> tuple[str, ...]:
        bad = [r for r in repos if not re.fullmatch(REPO_PATTERN, r)]
        if bad:
            raise ValueError(f"must be owner/name, got {', '.join(bad)}")
        return repos

    @property
    def host(self) -> str:
        return urlsplit(self.api_url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.api_url)
        return parts.port or (443 if parts.scheme == "https" else 80)


class _Repo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo: str | None = Field(
        None,
        pattern=REPO_PATTERN,
        description="Repository as owner/name; defaults to the first configured repository.",
    )


class RepoParams(_Repo):
    pass


class PrsParams(_Repo):
    base: str | None = Field(None, pattern=REF_PATTERN, description="Only PRs into this branch.")
    limit: int = Field(20, ge=1, le=100, description="How many open PRs to list, newest first.")


class PrParams(_Repo):
    number: int = Field(..., ge=1, description="The pull request number.")


class CommitsParams(_Repo):
    branch: str | None = Field(
        None, pattern=REF_PATTERN, description="Branch (or SHA); default: the default branch."
    )
    limit: int = Field(10, ge=1, le=100, description="How many recent commits to list.")


class RunsParams(_Repo):
    branch: str | None = Field(None, pattern=REF_PATTERN, description="Only runs on this branch.")
    status: (
        Literal["queued", "in_progress", "completed", "success", "failure", "cancelled"] | None
    ) = Field(None, description="Only runs with this status or conclusion.")
    limit: int = Field(10, ge=1, le=100, description="How many workflow runs to list, newest first.")


class FileParams(_Repo):
    path: str = Field(
        ..., min_length=1, max_length=500, pattern=r"^[^\s].*$", description="Path in the repo."
    )
    ref: str | None = Field(
        None, pattern=REF_PATTERN, description="Branch, tag or SHA; default: the default branch."
    )


class RerunParams(_Repo):
    run_id: int = Field(..., ge=1, description="The workflow run id (from `runs`).")
    failed_only: bool = Field(True, description="Re-run only the failed jobs (not the whole run).")


class RevertParams(_Repo):
    number: int = Field(..., ge=1, description="The merged pull request to revert.")
    branch: str | None = Field(
        None, pattern=REF_PATTERN, description="Name of the new branch; default revert-pr-<number>."
    )

    @property
    def head(self) -> str:
        return self.branch or f"revert-pr-{self.number}"


class MergeParams(_Repo):
    number: int = Field(..., ge=1, description="The pull request to merge.")
    base: str = Field(
        ..., pattern=REF_PATTERN, description="The branch the PR merges into (checked before merging)."
    )
    method: Literal["merge", "squash", "rebase"] = Field("merge", description="Merge method.")
    sha: str | None = Field(
        None, pattern=r"^[0-9a-f]{7,40}$", description="Expected head SHA; refuse if the PR moved."
    )


class IssueParams(_Repo):
    title: str = Field(..., min_length=1, max_length=256, description="Issue title.")
    body: str = Field("", max_length=20_000, description="Issue body (Markdown).")
    labels: list[str] = Field(default_factory=list, max_length=10, description="Label names.")


def repo_name(params: BaseModel, config: GitHubConfig) -> str:
    """The repository a call is about: its ``repo`` param, else the first default repo."""
    name = getattr(params, "repo", None) or next(iter(config.default_repos), None)
    if name is None:
        raise CallError("Which repository? Pass repo=owner/name (no default repos are configured).")
    return name


def _client(config: GitHubConfig, ctx: ActionContext):  # -> github.Github
    from github import Auth, Github

    host, port = ctx.address(config.host, config.port)
    parts = urlsplit(config.api_url)
    base = f"{parts.scheme}://{host}:{port}{parts.path}"
    token = ctx.secrets.get("github_token")
    return Github(
        base_url=base,
        auth=Auth.Token(token) if token else None,
        timeout=15,
        retry=None,
        per_page=50,
        seconds_between_requests=None,
        seconds_between_writes=None,
        lazy=True,
    )


def _upstream(e: Exception) -> str:
    data = getattr(e, "data", None)
    message = data.get("message") if isinstance(data, dict) else None
    return f"GitHub answered {e.status}: {message or 'no message'}"  # type: ignore[attr-defined]


def _guard(inv: str, p: _Repo, ctx: ActionContext, fn: Callable[..., ToolResult]) -> ToolResult:
    """Run ``fn(gh, repo)``; upstream and network failures become error results."""
    import requests
    from github import GithubException

    config = GitHubConfig.model_validate(ctx.config)
    try:
        gh = _client(config, ctx)
        return fn(gh, gh.get_repo(repo_name(p, config)))
    except GithubException as e:
        return ToolResult.fail(inv, _upstream(e))
    except requests.RequestException as e:
        return ToolResult.fail(inv, f"Cannot reach the GitHub API at {config.api_url}: {type(e).__name__}.")
    except CallError as e:
        return ToolResult.fail(inv, str(e))


def _none(inv: str, output: str) -> ToolResult:
    return ToolResult(status="no_data", invocation=inv, output=output)


def _day(when: Any) -> str:
    return when.strftime("%Y-%m-%d %H:%M") if when else "?"


def _repo(p: RepoParams, ctx: ActionContext) -> ToolResult:
    inv = f"GET /repos/{p.repo or '<default>'}"

    def go(gh, r) -> ToolResult:
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

    return _guard(inv, p, ctx, go)


def _prs(p: PrsParams, ctx: ActionContext) -> ToolResult:
    inv = f"GET /repos/{p.repo or '<default>'}/pulls?state=open" + (f"&base={p.base}" if p.base else "")

    def go(gh, r) -> ToolResult:
        kwargs = {"base": p.base} if p.base else {}
        pulls = list(islice(r.get_pulls(state="open", sort="created", direction="desc", **kwargs), p.limit))
        if not pulls:
            return _none(inv, "No open pull requests.")
        rows = [_pr_row(pr) for pr in pulls]
        lines = [
            f"#{x['number']} {x['title']} ({x['head']} → {x['base']}) by @{x['author']}"
            + (" [draft]" if x["draft"] else "")
            for x in rows
        ]
        return ToolResult.ok(inv, "\n".join(lines), rows)

    return _guard(inv, p, ctx, go)


def _pr_row(pr) -> dict[str, Any]:
    return {
        "number": pr.number,
        "title": pr.title,
        "author": pr.user.login,
        "head": pr.head.ref,
        "base": pr.base.ref,
        "draft": bool(pr.draft),
        "url": pr.html_url,
    }


def _checks(r, sha: str) -> dict[str, Any]:
    """Check runs plus legacy commit statuses on ``sha``, folded into one verdict."""
    commit = r.get_commit(sha)
    runs = [(c.name, c.conclusion or c.status) for c in commit.get_check_runs()]
    combined = commit.get_combined_status()
    runs += [(s.context, s.state) for s in combined.statuses]
    states = {state for _, state in runs}
    verdict = "no checks"
    if states & (FAILED | {"error"}):
        verdict = "failing"
    elif states - {"success", "neutral", "skipped"}:
        verdict = "pending"
    elif runs:
        verdict = "passing"
    return {"verdict": verdict, "checks": [{"name": n, "state": s} for n, s in runs]}


def _pr(p: PrParams, ctx: ActionContext) -> ToolResult:
    inv = f"GET /repos/{p.repo or '<default>'}/pulls/{p.number}"

    def go(gh, r) -> ToolResult:
        pr = r.get_pull(p.number)
        state = "merged" if pr.merged else pr.state
        files = [
            {"file": f.filename, "status": f.status, "+": f.additions, "-": f.deletions}
            for f in islice(pr.get_files(), MAX_FILES)
        ]
        checks = _checks(r, pr.head.sha)
        data = _pr_row(pr) | {"state": state, "head_sha": pr.head.sha, "files": files, **checks}
        lines = [
            f"#{pr.number} {pr.title} [{state}] by @{data['author']}: {data['head']} → {data['base']}",
            f"head {pr.head.sha[:7]}; checks {checks['verdict']}: "
            + ", ".join(f"{c['name']}={c['state']}" for c in checks["checks"]),
            f"{len(files)} file(s) changed:",
            *(f"  {f['status']:<8} {f['file']} (+{f['+']} -{f['-']})" for f in files),
        ]
        return ToolResult.ok(inv, "\n".join(lines), data)

    return _guard(inv, p, ctx, go)


def _commits(p: CommitsParams, ctx: ActionContext) -> ToolResult:
    inv = f"GET /repos/{p.repo or '<default>'}/commits?sha={p.branch or '<default branch>'}"

    def go(gh, r) -> ToolResult:
        branch = p.branch or r.default_branch
        rows = [
            {
                "sha": c.sha,
                "author": c.commit.author.name,
                "date": _day(c.commit.author.date),
                "message": c.commit.message.splitlines()[0] if c.commit.message else "",
            }
            for c in islice(r.get_commits(sha=branch), p.limit)
        ]
        if not rows:
            return _none(inv, f"No commits on `{branch}`.")
        lines = [f"{c['sha'][:7]} {c['date']} {c['author']}: {c['message']}" for c in rows]
        return ToolResult.ok(inv, "\n".join(lines), rows)

    return _guard(inv, p, ctx, go)


def _runs(p: RunsParams, ctx: ActionContext) -> ToolResult:
    inv = f"GET /repos/{p.repo or '<default>'}/actions/runs"

    def go(gh, r) -> ToolResult:
        kwargs = {k: v for k, v in (("branch", p.branch), ("status", p.status)) if v}
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
            for w in islice(r.get_workflow_runs(**kwargs), p.limit)
        ]
        if not rows:
            return _none(inv, "No workflow runs match.")
        lines = [
            f"{w['id']} {w['name']} #{w['number']} {w['status']}/{w['conclusion'] or '-'} "
            f"on {w['branch']} @{w['sha'][:7]} ({w['event']})"
            for w in rows
        ]
        return ToolResult.ok(inv, "\n".join(lines), rows)

    return _guard(inv, p, ctx, go)


def _file(p: FileParams, ctx: ActionContext) -> ToolResult:
    inv = f"GET /repos/{p.repo or '<default>'}/contents/{p.path}" + (f"?ref={p.ref}" if p.ref else "")

    def go(gh, r) -> ToolResult:
        found = r.get_contents(p.path, **({"ref": p.ref} if p.ref else {}))
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
        return ToolResult.ok(inv, text[:MAX_FILE_CHARS] + (f"\n… ({more} more characters)" if more > 0 else ""))

    return _guard(inv, p, ctx, go)


def _rerun(p: RerunParams, ctx: ActionContext) -> ToolResult:
    what = "rerun-failed-jobs" if p.failed_only else "rerun"
    inv = f"POST /repos/{p.repo or '<default>'}/actions/runs/{p.run_id}/{what}"

    def go(gh, r) -> ToolResult:
        run = r.get_workflow_run(p.run_id)
        if run.status != "completed":
            return ToolResult.fail(inv, f"Run {p.run_id} is still {run.status}; wait for it to finish.")
        if p.failed_only and run.conclusion not in FAILED:
            return ToolResult.fail(inv, f"Run {p.run_id} ended `{run.conclusion}`: no failed jobs to re-run.")
        gh.requester.requestJsonAndCheck("POST", f"{run.url}/{what}")
        return ToolResult.ok(inv, f"Re-running {run.name} run {p.run_id}: {run.html_url}", {"run_id": p.run_id})

    return _guard(inv, p, ctx, go)


def _blobs(tree) -> dict[str, tuple[str, str]]:
    return {e.path: (e.sha, e.mode) for e in tree.tree if e.type == "blob"}


def _revert(p: RevertParams, ctx: ActionContext) -> ToolResult:
    inv = f"revert PR #{p.number} of {p.repo or '<default>'} on branch {p.head}"

    def go(gh, r) -> ToolResult:
        pr = r.get_pull(p.number)
        if not pr.merged:
            return ToolResult.fail(inv, f"PR #{p.number} is not merged; only a merged PR can be reverted.")
        merge = r.get_git_commit(pr.merge_commit_sha)
        tip = r.get_git_commit(r.get_git_ref(f"heads/{pr.base.ref}").object.sha)
        merged, before = (_blobs(r.get_git_tree(c.tree.sha, recursive=True)) for c in (merge, merge.parents[0]))
        now_tree = r.get_git_tree(tip.tree.sha, recursive=True)
        return _open_revert(inv, p, r, pr, (merged, before, _blobs(now_tree)), (tip, now_tree))

    return _guard(inv, p, ctx, go)


def _open_revert(inv, p: RevertParams, r, pr, trees, base) -> ToolResult:
    """Undo the merge's file changes on top of the base tip, when nothing touched them since."""
    from github import InputGitTreeElement

    merged, before, now = trees
    changed = sorted(path for path in merged.keys() | before.keys() if merged.get(path) != before.get(path))
    if not changed:
        return _none(inv, f"PR #{p.number}'s merge changed no files; there is nothing to revert.")
    if all(now.get(path) == before.get(path) for path in changed):
        return _none(inv, f"PR #{p.number} is already reverted on `{pr.base.ref}`.")
    moved = [path for path in changed if now.get(path) != merged.get(path)]
    if moved:
        return ToolResult.fail(
            inv, f"Cannot revert PR #{p.number} cleanly: {', '.join(moved)} changed on "
            f"`{pr.base.ref}` after the merge. Revert it by hand.",
        )
    elements = [
        InputGitTreeElement(path, (before.get(path) or merged[path])[1], "blob",
                            sha=before[path][0] if path in before else None)
        for path in changed
    ]
    tip, now_tree = base
    tree = r.create_git_tree(elements, base_tree=now_tree)
    message = f'Revert "{pr.title}"\n\nThis reverts the merge of #{p.number} ({pr.merge_commit_sha}).'
    commit = r.create_git_commit(message, tree, [tip])
    r.create_git_ref(f"refs/heads/{p.head}", commit.sha)
    draft = r.create_pull(
        base=pr.base.ref, head=p.head, title=f'Revert "{pr.title}"', draft=True,
        body=f"Reverts #{p.number}. Opened by opsbot as a draft: review it, then merge it yourself.",
    )
    data = {"number": draft.number, "url": draft.html_url, "branch": p.head, "files": changed}
    return ToolResult.ok(inv, f"Opened draft PR #{draft.number} reverting #{p.number}: {draft.html_url}", data)


def _merge(p: MergeParams, ctx: ActionContext) -> ToolResult:
    inv = f"PUT /repos/{p.repo or '<default>'}/pulls/{p.number}/merge ({p.method})"

    def go(gh, r) -> ToolResult:
        pr = r.get_pull(p.number)
        if pr.merged or pr.state != "open":
            return ToolResult.fail(inv, f"PR #{p.number} is {'already merged' if pr.merged else 'closed'}.")
        if pr.base.ref != p.base:
            return ToolResult.fail(inv, f"PR #{p.number} targets `{pr.base.ref}`, not `{p.base}` as approved.")
        if p.sha and not pr.head.sha.startswith(p.sha):
            return ToolResult.fail(inv, f"PR #{p.number} moved to {pr.head.sha[:7]} since it was approved.")
        status = pr.merge(merge_method=p.method, sha=pr.head.sha)
        data = {"sha": status.sha, "merged": status.merged}
        return ToolResult.ok(inv, f"Merged PR #{p.number} into `{p.base}` ({status.sha[:7]}).", data)

    return _guard(inv, p, ctx, go)


def _issue(p: IssueParams, ctx: ActionContext) -> ToolResult:
    inv = f"POST /repos/{p.repo or '<default>'}/issues"

    def go(gh, r) -> ToolResult:
        issue = r.create_issue(title=p.title, body=p.body, labels=p.labels)
        data = {"number": issue.number, "url": issue.html_url}
        return ToolResult.ok(inv, f"Opened issue #{issue.number}: {issue.html_url}", data)

    return _guard(inv, p, ctx, go)


def _in(p: _Repo) -> str:
    return p.repo or "the default repository"


ACTIONS: list[Action[Any]] = [
    Action(
        name="repo",
        description="Show a GitHub repository: description, default branch, visibility, last push.",
        tier=Tier.OBSERVE,
        params=RepoParams,
        summary=lambda p: f"Read GitHub repository info of {_in(p)}",
        run=_repo,
        timeout=20,
    ),
    Action(
        name="prs",
        description="List open pull requests (newest first), optionally only those into a branch.",
        tier=Tier.OBSERVE,
        params=PrsParams,
        summary=lambda p: f"List open PRs in {_in(p)}",
        run=_prs,
        timeout=20,
    ),
    Action(
        name="pr",
        description="Show one pull request: state, author, branches, CI checks status and files "
        "changed. Use before merging or reverting.",
        tier=Tier.OBSERVE,
        params=PrParams,
        summary=lambda p: f"Read PR #{p.number} in {_in(p)}",
        run=_pr,
        timeout=30,
    ),
    Action(
        name="commits",
        description="List recent commits on a branch (default branch if none given). Use to find "
        "what changed before an incident.",
        tier=Tier.OBSERVE,
        params=CommitsParams,
        summary=lambda p: f"List the last {p.limit} commits on "
        f"{p.branch or 'the default branch'} of {_in(p)}",
        run=_commits,
        timeout=20,
    ),
    Action(
        name="runs",
        description="List GitHub Actions workflow runs, newest first, by branch and/or status.",
        tier=Tier.OBSERVE,
        params=RunsParams,
        summary=lambda p: f"List workflow runs in {_in(p)}",
        run=_runs,
        timeout=20,
    ),
    Action(
        name="file",
        description="Read a text file (or list a directory) at a branch, tag or SHA.",
        tier=Tier.OBSERVE,
        params=FileParams,
        summary=lambda p: f"Read `{p.path}` from {_in(p)}" + (f" at `{p.ref}`" if p.ref else ""),
        run=_file,
        timeout=20,
    ),
    Action(
        name="rerun",
        description="Re-run a finished, failed GitHub Actions workflow run (only its failed jobs "
        "unless failed_only is false).",
        tier=Tier.SANDBOX_EXECUTE,
        params=RerunParams,
        summary=lambda p: f"Re-run {'the failed jobs of ' if p.failed_only else ''}workflow run "
        f"{p.run_id} in {_in(p)}",
        run=_rerun,
        timeout=30,
    ),
    Action(
        name="revert_pr",
        description="Open a DRAFT pull request that reverts a merged PR (new branch + PR; opsbot "
        "never merges it). Use to propose rolling back a bad change.",
        tier=Tier.DRAFT,
        params=RevertParams,
        summary=lambda p: f"Open a draft PR in {_in(p)} reverting merged PR #{p.number} "
        f"(branch `{p.head}`)",
        run=_revert,
        timeout=60,
    ),
    Action(
        name="merge",
        description="Merge an open pull request. `base` must name the branch it merges into.",
        tier=Tier.SANDBOX_EXECUTE,
        params=MergeParams,
        summary=lambda p: f"Merge PR #{p.number} into `{p.base}` of {_in(p)} ({p.method})",
        run=_merge,
        timeout=30,
    ),
    Action(
        name="issue",
        description="Open a GitHub issue, e.g. an incident follow-up.",
        tier=Tier.DRAFT,
        params=IssueParams,
        summary=lambda p: f"Open an issue in {_in(p)}: “{p.title}”",
        run=_issue,
        timeout=20,
    ),
]


def _branch(action: Action[Any], params: BaseModel) -> str | None:
    if isinstance(params, RevertParams):
        return params.head
    return getattr(params, "base", None) or getattr(params, "branch", None) or getattr(params, "ref", None)


def _target(action: Action[Any], params: BaseModel, config: GitHubConfig) -> Target:
    repo = repo_name(params, config)
    attrs = {"repo": repo, "owner": repo.split("/")[0]}
    branch = _branch(action, params)
    return Target(kind="github_repo", name=repo, attrs=attrs | ({"branch": branch} if branch else {}))


def _egress(action: Action[Any], params: BaseModel, config: GitHubConfig) -> list[Endpoint]:
    return [Endpoint(host=config.host, port=config.port)]


def _secrets(action: Action[Any], params: BaseModel, config: GitHubConfig) -> list[SecretRef]:
    return [parse_secret_ref("github_token", config.token_secret)] if config.token_secret else []


TOOLSET: Toolset[GitHubConfig] = Toolset(
    name="github",
    description="GitHub: repositories, pull requests, commits, Actions runs and files; with "
    "approval, re-run CI, open revert drafts and issues, merge PRs.",
    config=GitHubConfig,
    actions=ACTIONS,
    target=_target,
    egress=_egress,
    secrets=_secrets,
)
