"""The GitHub connector's actions, run in-process with the real PyGithub against the emulator."""

import json
import time
import urllib.error
import urllib.request

import pytest

from sandbox.protocol import SandboxRequest
from tests.services.docker import run_once
from tools.base import ActionContext, Status, Tier
from tools.catalog import Call, CallError, Catalog
from tools.github import TOOLSET, GitHubConfig

pytest_plugins = ["tests.fakes.github"]  # the `github_api` fixture

TOKEN = "ghp_canary_5f1d0c7e9a2b4"


@pytest.fixture
def repo(github_api):
    github_api.tokens.add(TOKEN)
    repo = github_api.add_repo(
        "acme/api",
        files={"app.py": "VERSION = 1\n", "conf/limits.yaml": "rps: 100\n"},
        description="The API",
    )
    return repo


def catalog(api_url: str, **config) -> Catalog:
    return Catalog([TOOLSET], {"github": GitHubConfig(api_url=api_url, **config)})


def run(emulator, action, token=TOKEN, endpoints=None, api_url=None, **params):
    cat = catalog(api_url or emulator.url, default_repos=("acme/api",))
    resolved = cat.resolve(Call(id="t", toolset="github", action=action, params=params))
    secrets = {"github_token": token} if token else {}
    ctx = ActionContext(
        config=resolved.config.model_dump(), secrets=secrets, endpoints=endpoints or {}
    )
    return resolved.action.run(resolved.params, ctx)


def merged_pr(repo, *steps, title="Raise limits", method="merge"):
    """A PR with one commit per change set in ``steps``, merged with ``method``."""
    for i, changes in enumerate(steps):
        repo.commit(f"{title} ({i + 1}/{len(steps)})", changes, branch="feature")
    number = repo.open_pull("feature", "main", title)
    repo.merge_pull(number, method)
    return number


def test_repo_info(github_api, repo):
    result = run(github_api, "repo")
    assert result.status is Status.OK, result.error
    assert result.data["default_branch"] == "main"
    assert result.output.splitlines()[0] == "acme/api: The API"
    assert github_api.calls("GET", "/repos/acme/api")


def test_prs_lists_open_prs_newest_first_and_filters_by_base(github_api, repo):
    repo.commit("a", {"a.txt": "a\n"}, branch="feat-a")
    repo.commit("b", {"b.txt": "b\n"}, branch="feat-b")
    repo.commit("rel", {"r.txt": "r\n"}, branch="release")
    first = repo.open_pull("feat-a", "main", "Add a")
    second = repo.open_pull("feat-b", "release", "Add b", draft=True)
    result = run(github_api, "prs")
    assert [row["number"] for row in result.data] == [second, first]
    assert result.output.splitlines()[0] == f"#{second} Add b (feat-b → release) by @dev [draft]"
    only_main = run(github_api, "prs", base="main")
    assert [row["number"] for row in only_main.data] == [first]


def test_no_open_prs_is_no_data(github_api, repo):
    assert run(github_api, "prs").status is Status.NO_DATA


def test_pr_shows_checks_and_files(github_api, repo):
    head = repo.commit(
        "Raise limits", {"conf/limits.yaml": "rps: 500\n", "new.txt": "x\n"}, branch="f"
    )
    number = repo.open_pull("f", "main", "Raise limits")
    repo.add_check(head, "unit", conclusion="success")
    repo.add_check(head, "lint", conclusion="failure")
    repo.add_status(head, "ci/deploy-preview", "success")
    result = run(github_api, "pr", number=number)
    assert result.status is Status.OK, result.error
    assert result.data["verdict"] == "failing"
    assert result.data["head_sha"] == head
    assert {f["file"]: f["status"] for f in result.data["files"]} == {
        "conf/limits.yaml": "modified",
        "new.txt": "added",
    }
    assert "lint=failure" in result.output and "ci/deploy-preview=success" in result.output


def test_pr_checks_pending_and_missing_pr(github_api, repo):
    head = repo.commit("wip", {"a": "1\n"}, branch="f")
    number = repo.open_pull("f", "main", "WIP")
    repo.add_check(head, "unit", status="in_progress", conclusion=None)
    assert run(github_api, "pr", number=number).data["verdict"] == "pending"
    missing = run(github_api, "pr", number=999)
    assert missing.status is Status.ERROR
    assert missing.error == "GitHub answered 404: Not Found"


def test_commits_on_a_branch_follow_pagination(github_api, repo):
    for i in range(60):
        repo.commit(f"change {i}\n\nlong body", {"n.txt": f"{i}\n"})
    result = run(github_api, "commits", limit=55)
    assert len(result.data) == 55
    assert result.data[0]["message"] == "change 59"
    assert any(
        r.query.get("page") == "2" for r in github_api.calls("GET", "/repos/acme/api/commits")
    )
    repo.commit("on hotfix", {"h.txt": "h\n"}, branch="hotfix")
    assert run(github_api, "commits", branch="hotfix", limit=1).data[0]["message"] == "on hotfix"


def test_runs_filtered_by_status(github_api, repo):
    ok = repo.add_run("CI", "main")
    bad = repo.add_run("CI", "main", conclusion="failure")
    result = run(github_api, "runs")
    assert [r["id"] for r in result.data] == [bad, ok]
    failed = run(github_api, "runs", status="failure")
    assert [r["id"] for r in failed.data] == [bad]
    assert run(github_api, "runs", branch="nope").status is Status.NO_DATA


def test_file_reads_text_directories_and_refs(github_api, repo):
    assert run(github_api, "file", path="app.py").output == "VERSION = 1\n"
    listing = run(github_api, "file", path="conf")
    assert listing.data == ["limits.yaml"]
    old = repo.branches["main"]
    repo.commit("bump", {"app.py": "VERSION = 2\n"})
    assert run(github_api, "file", path="app.py", ref=old[:10]).output == "VERSION = 1\n"
    missing = run(github_api, "file", path="nope.txt")
    assert missing.status is Status.ERROR and "404" in missing.error


def test_binary_file_is_refused(github_api, repo):
    repo.commit("logo", {"logo.png": b"\x89PNG\r\n\x1a\n\xff\xfe"})
    result = run(github_api, "file", path="logo.png")
    assert result.error == "`logo.png` is a binary file; opsbot only shows text."


def test_rerun_failed_jobs(github_api, repo):
    failed = repo.add_run("CI", "main", conclusion="failure")
    result = run(github_api, "rerun", run_id=failed)
    assert result.status is Status.OK, result.error
    assert repo.runs[failed]["status"] == "queued" and repo.runs[failed]["run_attempt"] == 2
    assert github_api.calls("POST", f"/repos/acme/api/actions/runs/{failed}/rerun-failed-jobs")


def test_rerun_refuses_running_and_successful_runs_without_posting(github_api, repo):
    running = repo.add_run("CI", "main", status="in_progress", conclusion=None)
    green = repo.add_run("CI", "main")
    assert "still in_progress" in run(github_api, "rerun", run_id=running).error
    assert "no failed jobs" in run(github_api, "rerun", run_id=green).error
    assert not github_api.calls("POST", r".*/rerun.*")
    whole = run(github_api, "rerun", run_id=green, failed_only=False)
    assert whole.status is Status.OK and github_api.calls("POST", f".*/runs/{green}/rerun")


def test_revert_pr_opens_a_draft_that_restores_the_files(github_api, repo):
    number = merged_pr(repo, {"conf/limits.yaml": "rps: 9000\n", "added.txt": "new\n"})
    repo.commit("unrelated", {"app.py": "VERSION = 2\n"})
    result = run(github_api, "revert_pr", number=number)
    assert result.status is Status.OK, result.error
    assert result.data["files"] == ["added.txt", "conf/limits.yaml"]
    draft = repo.pulls[result.data["number"]]
    assert draft["draft"] and draft["head"] == f"revert-pr-{number}" and not draft["merged"]
    files = {p: repo.blobs[b].decode() for p, b in repo.files_at(f"revert-pr-{number}").items()}
    assert files == {"app.py": "VERSION = 2\n", "conf/limits.yaml": "rps: 100\n"}
    assert repo.commits[repo.branches[f"revert-pr-{number}"]]["parents"] == [repo.branches["main"]]
    assert not github_api.calls("PUT", r".*/merge")
    assert len(github_api.calls("GET", r".*/git/trees/.*")) == 3  # merged, before, tip: once each


@pytest.mark.parametrize("method", ["squash", "rebase"])
def test_revert_undoes_every_commit_of_a_squash_or_rebase_merge(github_api, repo, method):
    steps = [{"conf/limits.yaml": "rps: 200\n"}, {"conf/limits.yaml": "rps: 300\n", "b.txt": "b\n"}]
    number = merged_pr(repo, *steps, method=method)
    landed = repo.commits[repo.branches["main"]]
    assert len(landed["parents"]) == 1 and repo.pulls[number]["merged"]
    result = run(github_api, "revert_pr", number=number)
    assert result.status is Status.OK, result.error
    files = {p: repo.blobs[b].decode() for p, b in repo.files_at(result.data["branch"]).items()}
    assert files == {"app.py": "VERSION = 1\n", "conf/limits.yaml": "rps: 100\n"}


def test_revert_of_an_already_reverted_pr_is_no_data(github_api, repo):
    number = merged_pr(repo, {"conf/limits.yaml": "rps: 9000\n"})
    repo.commit("manual revert", {"conf/limits.yaml": "rps: 100\n"})
    result = run(github_api, "revert_pr", number=number)
    assert result.status is Status.NO_DATA and "already reverted" in result.output


def test_revert_refuses_when_files_changed_since_the_merge(github_api, repo):
    number = merged_pr(repo, {"conf/limits.yaml": "rps: 9000\n"})
    repo.commit("tune again", {"conf/limits.yaml": "rps: 8000\n"})
    result = run(github_api, "revert_pr", number=number)
    assert result.status is Status.ERROR
    assert "conf/limits.yaml changed on `main` after the merge" in result.error
    assert not github_api.calls("POST", r".*/git/refs") and not github_api.calls(
        "POST", r".*/pulls"
    )


def test_revert_refuses_unmerged_pr_and_existing_branch(github_api, repo):
    repo.commit("wip", {"a": "1\n"}, branch="f")
    open_pr = repo.open_pull("f", "main", "WIP")
    assert "is not merged" in run(github_api, "revert_pr", number=open_pr).error
    number = merged_pr(repo, {"b": "2\n"})
    repo.commit("taken", {"c": "3\n"}, branch=f"revert-pr-{number}")
    clash = run(github_api, "revert_pr", number=number)
    assert clash.error == "GitHub answered 422: Reference already exists"


def test_merge_merges_and_checks_base_and_head(github_api, repo):
    head = repo.commit("fix", {"app.py": "VERSION = 3\n"}, branch="fix")
    number = repo.open_pull("fix", "main", "Fix")
    wrong_base = run(github_api, "merge", number=number, base="release")
    assert wrong_base.error == f"PR #{number} targets `main`, not `release` as approved."
    moved = run(github_api, "merge", number=number, base="main", sha="abcdef0")
    assert "moved to" in moved.error
    result = run(github_api, "merge", number=number, base="main", sha=head[:12])
    assert result.status is Status.OK, result.error
    assert repo.pulls[number]["merged"] and repo.branches["main"] == result.data["sha"]
    put = github_api.calls("PUT", f"/repos/acme/api/pulls/{number}/merge")[0]
    assert json.loads(put.body)["sha"] == head
    assert (
        run(github_api, "merge", number=number, base="main").error
        == f"PR #{number} is already merged."
    )


def test_merge_conflict_reports_githubs_message(github_api, repo):
    repo.commit("fix", {"app.py": "VERSION = 3\n"}, branch="fix")
    number = repo.open_pull("fix", "main", "Fix")
    repo.commit("other", {"app.py": "VERSION = 4\n"})
    result = run(github_api, "merge", number=number, base="main")
    assert result.error == "GitHub answered 405: Pull Request is not mergeable"


def test_issue_is_opened_with_labels(github_api, repo):
    result = run(
        github_api,
        "issue",
        title="Follow up INC-42",
        body="Root cause: limits",
        labels=["incident"],
    )
    assert result.status is Status.OK, result.error
    issue = repo.issues[result.data["number"]]
    assert issue["title"] == "Follow up INC-42" and issue["labels"] == ["incident"]


def test_bad_or_missing_token_is_a_401_error_value(github_api, repo):
    assert (
        run(github_api, "repo", token="ghp_wrong").error == "GitHub answered 401: Bad credentials"
    )
    assert (
        run(github_api, "repo", token=None).error == "GitHub answered 401: Requires authentication"
    )


def test_unknown_repo_is_404(github_api, repo):
    assert run(github_api, "prs", repo="acme/nope").error == "GitHub answered 404: Not Found"


def test_unreachable_api_fails_fast():
    started = time.monotonic()
    result = run(None, "repo", api_url="http://127.0.0.1:1")
    assert result.error == "Cannot reach the GitHub API at http://127.0.0.1:1: ConnectionError."
    assert time.monotonic() - started < 5


def test_declared_endpoint_is_dialled_through_the_sandbox_mapping(github_api, repo):
    mapped = {"github.internal:80": f"127.0.0.1:{github_api.port}"}
    result = run(github_api, "repo", api_url="http://github.internal", endpoints=mapped)
    assert result.status is Status.OK, result.error


def test_invocations_name_the_exact_request(github_api, repo):
    assert run(github_api, "prs", base="main").invocation == (
        "GET /repos/acme/api/pulls?state=open&base=main"
    )
    assert (
        run(github_api, "file", path="app.py").invocation == "GET /repos/acme/api/contents/app.py"
    )
    failed = repo.add_run("CI", "main", conclusion="failure")
    assert run(github_api, "rerun", run_id=failed).invocation == (
        f"POST /repos/acme/api/actions/runs/{failed}/rerun-failed-jobs"
    )


def test_token_travels_only_in_the_authorization_header(github_api, repo):
    results = [
        run(github_api, "repo"),
        run(github_api, "file", path="nope"),
        run(github_api, "issue", title="x"),
    ]
    assert all(r.headers.get("Authorization") == f"token {TOKEN}" for r in github_api.requests)
    bodies = "\n".join(r.body + r.path + json.dumps(r.query) for r in github_api.requests)
    assert TOKEN in github_api.all_text() and TOKEN not in bodies
    assert not any(TOKEN in r.model_dump_json() for r in results)


def test_tiers_targets_egress_and_secrets():
    cat = catalog("https://api.github.com", default_repos=("acme/api",))
    merge = cat.resolve(
        Call(id="1", toolset="github", action="merge", params={"number": 7, "base": "main"})
    )
    assert merge.target.model_dump() == {
        "kind": "github_repo",
        "name": "acme/api",
        "attrs": {"repo": "acme/api", "owner": "acme", "branch": "main"},
    }
    assert merge.summary == "Merge PR #7 into `main` of the default repository (merge)"
    assert [str(e) for e in merge.egress] == ["api.github.com:443"]
    assert [(s.name, s.path, s.key) for s in merge.secrets] == [
        ("github_token", "static:GITHUB_TOKEN", "GITHUB_TOKEN")
    ]
    revert = cat.resolve(
        Call(id="2", toolset="github", action="revert_pr", params={"repo": "acme/web", "number": 3})
    )
    assert revert.target.attrs == {"repo": "acme/web", "owner": "acme", "branch": "revert-pr-3"}
    assert (
        revert.summary
        == "Open a draft PR in acme/web reverting merged PR #3 (branch `revert-pr-3`)"
    )
    assert {a.name: int(a.tier) for a in TOOLSET.actions} == {
        "repo": 0,
        "prs": 0,
        "pr": 0,
        "commits": 0,
        "runs": 0,
        "file": 0,
        "rerun": 3,
        "revert_pr": 2,
        "merge": 3,
        "issue": 2,
        "checks": 0,
        "comment": 2,
        "branch": 2,
        "commit": 2,
        "open_pr": 2,
        "draft_pr": 2,
    }
    assert merge.tier is Tier.SANDBOX_EXECUTE


def test_vault_token_and_enterprise_url():
    cat = catalog("http://ghe.corp:8080/api/v3", token_secret="kv/data/github#token")
    resolved = cat.resolve(Call(id="1", toolset="github", action="prs", params={"repo": "a/b"}))
    assert [str(e) for e in resolved.egress] == ["ghe.corp:8080"]
    assert [(s.path, s.key) for s in resolved.secrets] == [("kv/data/github", "token")]


@pytest.mark.parametrize(
    "action,params,message",
    [
        ("prs", {}, "Which repository\\? Pass repo=owner/name"),
        ("prs", {"repo": "not a repo"}, "repo: String should match pattern"),
        ("pr", {"repo": "a/b"}, "number: Field required"),
        ("pr", {"repo": "a/b", "number": 0}, "number: Input should be greater than or equal to 1"),
        ("merge", {"repo": "a/b", "number": 1}, "base: Field required"),
        (
            "merge",
            {"repo": "a/b", "number": 1, "base": "main", "method": "yolo"},
            "method: Input should be",
        ),
        ("commits", {"repo": "a/b", "branch": "-rf"}, "branch: String should match pattern"),
        ("runs", {"repo": "a/b", "extra": 1}, "extra: Extra inputs are not permitted"),
        ("revert", {"repo": "a/b"}, "Did you mean `revert_pr`?"),
    ],
)
def test_bad_calls_are_specific_sentences(action, params, message):
    with pytest.raises(CallError, match=message):
        catalog("https://api.github.com").resolve(
            Call(id="t", toolset="github", action=action, params=params)
        )


@pytest.mark.parametrize(
    "config,message",
    [
        ({"api_url": "ftp://x"}, "must be an http\\(s\\) URL"),
        ({"api_url": "https://u:p@api.github.com"}, "must not contain credentials"),
        ({"token_secret": "GITHUB_TOKEN"}, "must look like static:GITHUB_TOKEN"),
        ({"default_repos": ["acme"]}, "must be owner/name, got acme"),
    ],
)
def test_bad_config_is_refused(config, message):
    with pytest.raises(ValueError, match=message):
        GitHubConfig(**config)


def test_emulator_answers_401_and_404_like_github(github_api):
    github_api.add_repo("acme/api")
    with pytest.raises(urllib.error.HTTPError) as anon:
        urllib.request.urlopen(f"{github_api.url}/repos/acme/api")
    assert anon.value.code == 401
    auth = {"Authorization": "Bearer ghp_emulator_token"}
    request = urllib.request.Request(f"{github_api.url}/repos/acme/zzz", headers=auth)
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request)
    assert missing.value.code == 404 and json.loads(missing.value.read())["message"] == "Not Found"


@pytest.mark.docker
async def test_in_the_sandbox_the_api_is_dialled_by_its_host_name(github_api, repo,
                                                                   sandbox_image):
    """The connector in a real sandbox container: the API's host name survives egress (the
    URL PyGithub builds, and so TLS and the Host header, carry the name, not the gateway)."""
    api_url = f"http://github.example.test:{github_api.port}"
    call = Call(id="gh-name", toolset="github", action="repo", params={})
    resolved = catalog(api_url, default_repos=("acme/api",)).resolve(call)
    request = SandboxRequest(
        run_id="gh", call_id="gh-name", toolset="github", action="repo",
        params=resolved.params.model_dump(mode="json"),
        config=resolved.config.model_dump(mode="json"), secrets={"github_token": TOKEN},
        egress=resolved.egress,
    )
    outcome = await run_once(request, sandbox_image, "gh", {"github.example.test": "127.0.0.1"})
    assert outcome.result.status is Status.OK, (outcome.result.error, outcome.diagnostics)
    assert "acme/api" in outcome.result.output
    assert {r.headers.get("Host") for r in github_api.requests} == {
        f"github.example.test:{github_api.port}"}
