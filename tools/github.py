"""GitHub connector: read repositories, PRs, commits and CI runs; with approval, act on them.

Observe (tier 0): ``repo``, ``prs``, ``pr``, ``commits``, ``runs``, ``file``, ``checks``. Draft
(tier 2): ``issue``, ``comment``, ``revert_pr`` (a draft PR that reverts a merged PR), and change
control: ``branch``, ``commit`` (files or a unified diff), ``open_pr`` and ``draft_pr`` (all
three in one step; "Save as runbook" proposes its draft so) — never onto the default branch (``tools/github_change.py``). Changes (tier 3, raised by policy for the default
branch): ``rerun``, ``merge`` (refused while required checks are pending or failing unless
``ignore_checks``; its approval card shows the checks).

The API is reached through PyGithub with retries and throttling off and short timeouts, so a
failing GitHub turns into an error result within seconds. The token is ``GITHUB_TOKEN`` from
opsbot's settings by default (``token_secret="static:GITHUB_TOKEN"``) or a Vault path
(``kv/data/github#token``); it arrives in ``ctx.secrets["github_token"]``. This module is the
declarative part policy and approvals read (config, params, tiers, summaries, targets); what
each action does against the API lives in ``tools/github_ops.py``.

Usage (what the sandbox entrypoint does)::

    action = TOOLSET.action("prs")
    action.run(action.params.model_validate({"repo": "acme/api"}), ctx)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tools import github_change as change
from tools import github_ops as ops
from tools.base import (
    Action,
    ActionContext,
    Endpoint,
    SecretKind,
    SecretRef,
    Target,
    Tier,
    ToolResult,
    Toolset,
)
from tools.catalog import CallError

REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$"
REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$"


def _check_secret_ref(ref: str | None) -> str | None:
    return SecretRef.check(ref, "static:GITHUB_TOKEN")


class GitHubConfig(BaseModel):
    """Where the GitHub API is, where the token comes from, and the repos to assume."""

    model_config = ConfigDict(frozen=True)

    api_url: str = "https://api.github.com"
    token_secret: str | None = "static:GITHUB_TOKEN"
    default_repos: tuple[str, ...] = ()
    # True: each action gets a GitHub App installation token for its repo with the permissions
    # of PERMISSIONS (sandbox/credentials/github_app.py; OPSBOT_GITHUB_APP_*), not token_secret.
    app: bool = False

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
    limit: int = Field(
        10, ge=1, le=100, description="How many workflow runs to list, newest first."
    )


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
        ...,
        pattern=REF_PATTERN,
        description="The branch the PR merges into (checked before merging).",
    )
    method: Literal["merge", "squash", "rebase"] = Field("merge", description="Merge method.")
    sha: str | None = Field(
        None, pattern=r"^[0-9a-f]{7,40}$", description="Expected head SHA; refuse if the PR moved."
    )
    ignore_checks: bool = Field(
        False, description="Merge even if required checks are pending or failing (policy may "
        "deny this or ask for more approvers: the target carries checks=ignored).")


class IssueParams(_Repo):
    title: str = Field(..., min_length=1, max_length=256, description="Issue title.")
    body: str = Field("", max_length=20_000, description="Issue body (Markdown).")
    labels: list[Annotated[str, Field(min_length=1, max_length=50)]] = Field(
        default_factory=list, max_length=10, description="Label names."
    )


class CommentParams(_Repo):
    number: int = Field(..., ge=1, description="The issue or pull request number.")
    body: str = Field(..., min_length=1, max_length=20_000, description="Comment (Markdown).")


class BranchParams(_Repo):
    branch: str = Field(..., pattern=REF_PATTERN, description="Name of the new branch.")
    from_ref: str | None = Field(
        None, pattern=REF_PATTERN, description="Branch, tag or SHA to start from; default: the "
        "default branch.")


class CommitParams(_Repo):
    branch: str = Field(..., pattern=REF_PATTERN,
                        description="The branch to commit to (never the default branch).")
    message: str = Field(..., min_length=1, max_length=5_000, description="Commit message.")
    files: dict[str, str | None] | None = Field(
        None, max_length=50, description="path → new full content (null deletes the file).")
    patch: str | None = Field(
        None, max_length=200_000, description="A unified diff (git diff output) to apply instead "
        "of files; refused if any hunk does not match the branch.")

    @model_validator(mode="after")
    def _one_of(self) -> CommitParams:
        if (self.files is None) == (self.patch is None):
            raise ValueError("give exactly one of files or patch")
        _check_files(self.files or {})
        return self


class DraftPrParams(_Repo):
    branch: str = Field(..., pattern=REF_PATTERN, description="The branch to propose the files "
                        "on: created from the default branch if it does not exist.")
    title: str = Field(..., min_length=1, max_length=256,
                       description="The draft PR's title (and the commit message).")
    body: str = Field("", max_length=20_000, description="PR description (Markdown).")
    files: dict[str, str] = Field(..., min_length=1, max_length=50,
                                  description="path → full content of each proposed file.")

    @model_validator(mode="after")
    def _plain(self) -> DraftPrParams:
        _check_files(self.files)
        return self


def _check_files(files: dict[str, str | None]) -> None:
    bad = [p for p in files if not re.fullmatch(r"[\w.-]+(/[\w.-]+)*", p)
           or ".." in p.split("/") or len(p) > 400]
    if bad:
        raise ValueError(f"not a plain relative path: {', '.join(bad[:3])}")
    if any(len(text or "") > 400_000 for text in files.values()):
        raise ValueError("a file is larger than 400000 characters")


class PullParams(_Repo):
    head: str = Field(..., pattern=REF_PATTERN, description="The branch with the changes.")
    base: str | None = Field(None, pattern=REF_PATTERN,
                             description="The branch to merge into; default: the default branch.")
    title: str = Field(..., min_length=1, max_length=256, description="PR title.")
    body: str = Field("", max_length=20_000, description="PR description (Markdown).")
    draft: bool = Field(False, description="Open it as a draft.")


class ChecksParams(_Repo):
    ref: str | None = Field(None, pattern=REF_PATTERN,
                            description="Branch, tag or SHA; default: the default branch.")
    number: int | None = Field(None, ge=1, description="A pull request: its head's checks, "
                               "judged by its base branch's required checks.")


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
    token = ctx.secrets.get("github_token")
    return Github(
        base_url=f"{parts.scheme}://{host}:{port}{parts.path}",
        auth=Auth.Token(token) if token else None,
        timeout=15,
        retry=None,
        per_page=50,
        seconds_between_requests=None,
        seconds_between_writes=None,
        lazy=True,
    )


def _upstream(e: Any) -> str:
    message = e.data.get("message") if isinstance(e.data, dict) else None
    return f"GitHub answered {e.status}: {message or 'no message'}"


Body = Callable[[Any, Any, str], ToolResult]  # (repository, params, invocation) -> result
Invocation = Callable[[str, Any], str]  # (owner/name, params) -> what is shown as the call


def _http(method: str, path: str, **query: Any) -> str:
    given = "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
    return f"{method} {path}" + (f"?{given}" if given else "")


def _api(invocation: Invocation, body: Body) -> Callable[[Any, ActionContext], ToolResult]:
    """An action's ``run``: call ``body`` with the repository; failures become error values."""

    def run(p: _Repo, ctx: ActionContext) -> ToolResult:
        import requests
        from github import GithubException

        config = GitHubConfig.model_validate(ctx.config)
        try:
            name = repo_name(p, config)
        except CallError as e:
            return ToolResult.fail(invocation("<repo>", p), str(e))
        inv = invocation(name, p)
        try:
            return body(_client(config, ctx).get_repo(name), p, inv)
        except GithubException as e:
            return ToolResult.fail(inv, _upstream(e))
        except requests.RequestException as e:
            reason = type(e).__name__
            return ToolResult.fail(
                inv, f"Cannot reach the GitHub API at {config.api_url}: {reason}."
            )

    return run


def _in(p: _Repo) -> str:
    return p.repo or "the default repository"


ACTIONS: list[Action[Any]] = [
    Action(
        name="repo",
        description="Show a GitHub repository: description, default branch, visibility, last push.",
        tier=Tier.OBSERVE,
        params=RepoParams,
        summary=lambda p: f"Read GitHub repository info of {_in(p)}",
        run=_api(lambda r, p: _http("GET", f"/repos/{r}"), ops.repo),
        timeout=20,
    ),
    Action(
        name="prs",
        description="List open pull requests (newest first), optionally only those into a branch.",
        tier=Tier.OBSERVE,
        params=PrsParams,
        summary=lambda p: f"List open PRs in {_in(p)}",
        run=_api(
            lambda r, p: _http("GET", f"/repos/{r}/pulls", state="open", base=p.base), ops.prs
        ),
        timeout=20,
    ),
    Action(
        name="pr",
        description="Show one pull request: state, author, branches, CI checks status and files "
        "changed. Use before merging or reverting.",
        tier=Tier.OBSERVE,
        params=PrParams,
        summary=lambda p: f"Read PR #{p.number} in {_in(p)}",
        run=_api(lambda r, p: _http("GET", f"/repos/{r}/pulls/{p.number}"), ops.pr),
        timeout=30,
    ),
    Action(
        name="commits",
        description="List recent commits on a branch (default branch if none given). Use to find "
        "what changed before an incident.",
        tier=Tier.OBSERVE,
        params=CommitsParams,
        summary=lambda p: (
            f"List the last {p.limit} commits on {p.branch or 'the default branch'} of {_in(p)}"
        ),
        run=_api(lambda r, p: _http("GET", f"/repos/{r}/commits", sha=p.branch), ops.commits),
        timeout=20,
    ),
    Action(
        name="runs",
        description="List GitHub Actions workflow runs, newest first, by branch and/or status.",
        tier=Tier.OBSERVE,
        params=RunsParams,
        summary=lambda p: f"List workflow runs in {_in(p)}",
        run=_api(
            lambda r, p: _http("GET", f"/repos/{r}/actions/runs", branch=p.branch, status=p.status),
            ops.runs,
        ),
        timeout=20,
    ),
    Action(
        name="file",
        description="Read a text file (or list a directory) at a branch, tag or SHA.",
        tier=Tier.OBSERVE,
        params=FileParams,
        summary=lambda p: f"Read `{p.path}` from {_in(p)}" + (f" at `{p.ref}`" if p.ref else ""),
        run=_api(lambda r, p: _http("GET", f"/repos/{r}/contents/{p.path}", ref=p.ref), ops.file),
        timeout=20,
    ),
    Action(
        name="rerun",
        description="Re-run a finished, failed GitHub Actions workflow run (only its failed jobs "
        "unless failed_only is false).",
        tier=Tier.SANDBOX_EXECUTE,
        params=RerunParams,
        summary=lambda p: (
            f"Re-run {'the failed jobs of ' if p.failed_only else ''}workflow run "
            f"{p.run_id} in {_in(p)}"
        ),
        run=_api(
            lambda r, p: _http(
                "POST",
                f"/repos/{r}/actions/runs/{p.run_id}/rerun"
                + ("-failed-jobs" if p.failed_only else ""),
            ),
            ops.rerun,
        ),
        timeout=30,
    ),
    Action(
        name="revert_pr",
        description="Open a DRAFT pull request that reverts a merged PR (new branch + PR; opsbot "
        "never merges it). Use to propose rolling back a bad change.",
        tier=Tier.DRAFT,
        params=RevertParams,
        summary=lambda p: (
            f"Open a draft PR in {_in(p)} reverting merged PR #{p.number} (branch `{p.head}`)"
        ),
        run=_api(
            lambda r, p: f"revert PR #{p.number} of {r} in a draft PR from `{p.head}`", ops.revert
        ),
        timeout=60,
    ),
    Action(
        name="merge",
        description="Merge an open pull request. `base` must name the branch it merges into.",
        tier=Tier.SANDBOX_EXECUTE,
        params=MergeParams,
        summary=lambda p: f"Merge PR #{p.number} into `{p.base}` of {_in(p)} ({p.method})",
        run=_api(
            lambda r, p: _http("PUT", f"/repos/{r}/pulls/{p.number}/merge", merge_method=p.method),
            ops.merge,
        ),
        timeout=30,
        preview=_api(lambda r, p: f"checks of PR #{p.number} in {r}", ops.merge_preview),
    ),
    Action(
        name="checks",
        description="CI status of a branch, SHA or pull request: every check run and commit "
        "status, and whether the required ones pass. Use before asking for a merge.",
        tier=Tier.OBSERVE,
        params=ChecksParams,
        summary=lambda p: f"Read the checks of {_ref_text(p)} in {_in(p)}",
        run=_api(lambda r, p: f"checks of {_ref_text(p)} in {r}", change.checks),
        timeout=30,
    ),
    Action(
        name="comment",
        description="Comment on an issue or pull request.",
        tier=Tier.DRAFT,
        params=CommentParams,
        summary=lambda p: f"Comment on #{p.number} in {_in(p)}",
        run=_api(lambda r, p: _http("POST", f"/repos/{r}/issues/{p.number}/comments"),
                 change.comment),
        timeout=20,
    ),
    Action(
        name="branch",
        description="Create a branch (from the default branch unless from_ref is given) to "
        "commit a proposed change to. Never the default branch itself.",
        tier=Tier.DRAFT,
        params=BranchParams,
        summary=lambda p: f"Create branch `{p.branch}` in {_in(p)} from "
                          f"{p.from_ref or 'the default branch'}",
        run=_api(lambda r, p: _http("POST", f"/repos/{r}/git/refs"), change.branch),
        timeout=20,
    ),
    Action(
        name="commit",
        description="Commit file changes to a branch (not the default branch): either `files` "
        "(path → full new content, null deletes) or `patch` (a unified diff). Then open_pr.",
        tier=Tier.DRAFT,
        params=CommitParams,
        summary=lambda p: f"Commit {_change_text(p)} to `{p.branch}` in {_in(p)}: "
                          f"{p.message.splitlines()[0][:80]}",
        run=_api(lambda r, p: f"commit to {r}@{p.branch}", change.commit),
        timeout=60,
    ),
    Action(
        name="open_pr",
        description="Open a pull request from a branch (never from the default branch) into "
        "the default branch or `base`. A human merges it (see merge).",
        tier=Tier.DRAFT,
        params=PullParams,
        summary=lambda p: f"Open a {'draft ' if p.draft else ''}PR `{p.head}` → "
                          f"`{p.base or 'default branch'}` in {_in(p)}: “{p.title}”",
        run=_api(lambda r, p: _http("POST", f"/repos/{r}/pulls"), change.pull),
        timeout=30,
    ),
    Action(
        name="draft_pr",
        description="Propose files as a draft pull request in one step: the branch (created "
        "from the default branch when missing), one commit of `files`, and a draft PR into "
        "the default branch (the open one from that branch, when there is one). A human "
        "reviews and merges it.",
        tier=Tier.DRAFT,
        params=DraftPrParams,
        summary=lambda p: f"Propose {len(p.files)} file(s) as a draft PR from `{p.branch}` in "
                          f"{_in(p)}: “{p.title}”",
        run=_api(lambda r, p: f"draft PR from {r}@{p.branch}", change.draft_pr),
        timeout=60,
    ),
    Action(
        name="issue",
        description="Open a GitHub issue, e.g. an incident follow-up.",
        tier=Tier.DRAFT,
        params=IssueParams,
        summary=lambda p: f"Open an issue in {_in(p)}: “{p.title}”",
        run=_api(lambda r, p: _http("POST", f"/repos/{r}/issues"), ops.issue),
        timeout=20,
    ),
]


def _ref_text(p: ChecksParams) -> str:
    return f"PR #{p.number}" if p.number else f"`{p.ref}`" if p.ref else "the default branch"


def _change_text(p: CommitParams) -> str:
    return f"{len(p.files)} file(s)" if p.files is not None else "a patch"


_READ = {"contents": "read", "pull_requests": "read", "checks": "read", "statuses": "read"}
# What a GitHub App installation token minted for each action may do (GitHub's permission
# names); sandbox/credentials/github_app.py mints exactly this, for the call's repository only.
PERMISSIONS: dict[str, dict[str, str]] = {
    "repo": {"contents": "read"},
    "prs": {"pull_requests": "read"},
    "pr": _READ,
    "commits": {"contents": "read"},
    "runs": {"actions": "read"},
    "file": {"contents": "read"},
    "checks": _READ | {"administration": "read"},  # required checks live in branch protection
    "rerun": {"actions": "write"},
    "revert_pr": {"contents": "write", "pull_requests": "write"},
    "merge": _READ | {"contents": "write", "pull_requests": "write", "administration": "read"},
    "comment": {"issues": "write"},
    "branch": {"contents": "write"},
    "commit": {"contents": "write"},
    "open_pr": {"contents": "read", "pull_requests": "write"},
    "draft_pr": {"contents": "write", "pull_requests": "write"},
    "issue": {"issues": "write"},
}


def _branch(params: BaseModel) -> str | None:
    if isinstance(params, RevertParams):
        return params.head
    if isinstance(params, (CommitParams, BranchParams)):
        return params.branch
    return (
        getattr(params, "base", None)
        or getattr(params, "branch", None)
        or getattr(params, "ref", None)
    )


def _target(action: Action[Any], params: BaseModel, config: GitHubConfig) -> Target:
    repo = repo_name(params, config)
    attrs = {"repo": repo, "owner": repo.split("/")[0]}
    if getattr(params, "ignore_checks", False):
        attrs["checks"] = "ignored"
    if isinstance(params, PullParams):
        attrs["head"] = params.head
    branch = _branch(params)
    return Target(
        kind="github_repo", name=repo, attrs=attrs | ({"branch": branch} if branch else {})
    )


def _egress(action: Action[Any], params: BaseModel, config: GitHubConfig) -> list[Endpoint]:
    return [Endpoint(host=config.host, port=config.port)]


def _secrets(action: Action[Any], params: BaseModel, config: GitHubConfig) -> list[SecretRef]:
    if config.app:
        return [SecretRef(name="github_token", path=repo_name(params, config), key="token",
                          kind=SecretKind.GITHUB_APP,
                          params=(("permissions", permission_text(action)),))]
    return [SecretRef.parse("github_token", config.token_secret)] if config.token_secret else []


def permission_text(action: Action[Any]) -> str:
    """``contents=write,pull_requests=write``: what the action's App token may do. A preview
    (the action asked for at tier 0, ``Resolved.preview_secrets``) gets the same scopes read-only."""
    wanted = PERMISSIONS[action.name]
    own = TOOLSET.action(action.name)
    if own is not None and action.tier < own.tier:
        wanted = {name: "read" for name in wanted}
    return ",".join(f"{name}={level}" for name, level in sorted(wanted.items()))


TOOLSET: Toolset[GitHubConfig] = Toolset(
    name="github",
    description="GitHub: repositories, pull requests, commits, Actions runs and files; with "
    "approval, re-run CI, open revert drafts and issues, merge PRs.",
    config=GitHubConfig,
    actions=ACTIONS,
    target=_target,
    egress=_egress,
    secrets=_secrets,
    preload=("github", "requests"),
)
