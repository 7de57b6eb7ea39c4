"""GitHub change control against the emulator: branch, commit (files or a patch), PR, checks,
the merge gate, comments. The flow the agent follows is the last test: propose a fix as a PR,
read its checks, and a human approves the merge with the checks on the card."""

from __future__ import annotations

import itertools
import json

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from pydantic import SecretStr

from graph.build import build_graph
from graph.deps import GraphDeps, Limits
from graph.policy import parse_policy
from graph.records.sqlite import SqliteRecords
from graph.task import Source, Task
from sandbox.credentials import CredentialBroker
from tests.tools.test_github import TOKEN, catalog, run
from tests.tools.test_openapi import InlineExecutor
from tools.base import Status

pytest_plugins = ["tests.fakes.github"]

PATCH = """\
--- a/conf/limits.yaml
+++ b/conf/limits.yaml
@@ -1,2 +1,2 @@
 rps: 100
-burst: 10
+burst: 50
"""
_ids = itertools.count()


@pytest.fixture
def repo(github_api):
    github_api.tokens.add(TOKEN)
    return github_api.add_repo("acme/api", files={"app.py": "VERSION = 1\n",
                                                  "conf/limits.yaml": "rps: 100\nburst: 10\n"})


def files(repo, ref):
    return {p: repo.blobs[b].decode() for p, b in repo.files_at(ref).items()}


def proposed_pr(github_api, repo) -> int:
    assert run(github_api, "branch", branch="fix-burst").status is Status.OK
    done = run(github_api, "commit", branch="fix-burst", message="Raise burst", patch=PATCH)
    assert done.status is Status.OK, done.error
    opened = run(github_api, "open_pr", head="fix-burst", title="Raise burst to 50")
    assert opened.status is Status.OK, opened.error
    return opened.data["number"]


def test_branch_commit_and_pr_never_touch_the_default_branch(github_api, repo):
    main_before = repo.branches["main"]
    number = proposed_pr(github_api, repo)
    pull = repo.pulls[number]
    assert (pull["head"], pull["base"], pull["state"]) == ("fix-burst", "main", "open")
    assert files(repo, "fix-burst")["conf/limits.yaml"] == "rps: 100\nburst: 50\n"
    assert repo.branches["main"] == main_before
    for action, params in [("branch", {"branch": "main"}),
                           ("commit", {"branch": "main", "message": "x", "files": {"a": "b"}}),
                           ("open_pr", {"head": "main", "base": "fix-burst", "title": "x"})]:
        refused = run(github_api, action, **params)
        assert "default branch of acme/api" in refused.error
    assert repo.branches["main"] == main_before
    assert not github_api.calls("PATCH", r".*/git/refs/heads/main")


def test_commit_files_adds_changes_and_deletes(github_api, repo):
    run(github_api, "branch", branch="tidy")
    result = run(github_api, "commit", branch="tidy", message="Tidy",
                 files={"app.py": "VERSION = 2\n", "conf/limits.yaml": None, "NEW.md": "hi\n"})
    assert result.status is Status.OK, result.error
    assert files(repo, "tidy") == {"app.py": "VERSION = 2\n", "NEW.md": "hi\n"}
    head = repo.commits[repo.branches["tidy"]]
    assert head["message"] == "Tidy" and head["parents"] == [repo.branches["main"]]


def test_a_patch_that_does_not_match_commits_nothing(github_api, repo):
    run(github_api, "branch", branch="stale")
    repo.commit("moved on", {"conf/limits.yaml": "rps: 200\nburst: 10\n"}, branch="stale")
    before = repo.branches["stale"]
    result = run(github_api, "commit", branch="stale", message="x", patch=PATCH)
    assert result.error == ("The patch was not applied: hunk 1 of conf/limits.yaml does not apply: "
                            "the file differs at line 1. Nothing was committed.")
    assert repo.branches["stale"] == before


def test_checks_pending_then_merge_refused_with_the_reason(github_api, repo):
    number = proposed_pr(github_api, repo)
    head = repo.branches["fix-burst"]
    repo.required_checks["main"] = ["unit", "lint"]
    repo.add_check(head, "unit", status="in_progress", conclusion=None)
    checks = run(github_api, "checks", number=number)
    assert checks.data["verdict"] == "pending" and checks.data["pending"] == ["lint", "unit"]
    refused = run(github_api, "merge", number=number, base="main")
    assert refused.error == (f"PR #{number} is not merged: its required checks are pending "
                             "(pending: lint, unit). Wait for them, or ask for a merge with "
                             "ignore_checks=true if policy allows it.")
    repo.add_check(head, "lint", conclusion="failure")
    failing = run(github_api, "merge", number=number, base="main")
    assert "required checks are failing (failing: lint; pending: unit)" in failing.error
    assert not github_api.calls("PUT", r".*/merge") and not repo.pulls[number]["merged"]


def test_ignore_checks_merges_and_is_visible_to_policy(github_api, repo):
    number = proposed_pr(github_api, repo)
    repo.add_check(repo.branches["fix-burst"], "unit", conclusion="failure")
    assert "failing" in run(github_api, "merge", number=number, base="main").error
    cat = catalog(github_api.url, default_repos=("acme/api",))
    from tools.catalog import Call
    resolved = cat.resolve(Call(id="m", toolset="github", action="merge", params={
        "number": number, "base": "main", "ignore_checks": True}))
    assert resolved.target.attrs["checks"] == "ignored"
    forced = run(github_api, "merge", number=number, base="main", ignore_checks=True)
    assert forced.status is Status.OK and repo.pulls[number]["merged"]


def test_comment_is_posted(github_api, repo):
    number = proposed_pr(github_api, repo)
    result = run(github_api, "comment", number=number, body="CI is green; ready for review.")
    assert result.status is Status.OK, result.error
    assert repo.comments[number][0]["body"] == "CI is green; ready for review."
    assert "404" in run(github_api, "comment", number=999, body="x").error


def test_draft_pr_proposes_files_in_one_step_and_again_updates_the_same_pr(github_api, repo):
    main_before = repo.branches["main"]
    runbook = {"runbooks/drafts/redis-evicting-r-1a2b3c4d.md": "---\ntitle: Redis\n---\n# Redis\n"}
    first = run(github_api, "draft_pr", branch="opsbot/runbook-r-1a2b3c4d",
                title="Runbook draft: Redis", body="From run r-1a2b3c4d.", files=runbook)
    assert first.status is Status.OK, first.error
    number = first.data["number"]
    pull = repo.pulls[number]
    assert (pull["head"], pull["base"], pull["draft"]) == ("opsbot/runbook-r-1a2b3c4d", "main", True)
    assert files(repo, "opsbot/runbook-r-1a2b3c4d") == files(repo, "main") | {
        path: text for path, text in runbook.items()}
    assert first.output.startswith(f"Opened draft PR #{number}")

    same = run(github_api, "draft_pr", branch="opsbot/runbook-r-1a2b3c4d",
               title="Runbook draft: Redis", files=runbook)
    assert same.data["number"] == number and not same.data["committed"]
    assert same.output.startswith(f"Already open: #{number}") and len(repo.pulls) == 1
    edited = {path: text + "More.\n" for path, text in runbook.items()}
    again = run(github_api, "draft_pr", branch="opsbot/runbook-r-1a2b3c4d",
                title="Runbook draft: Redis", files=edited)
    assert again.data["committed"] and not again.data["opened"] and again.data["number"] == number
    assert files(repo, "opsbot/runbook-r-1a2b3c4d")[next(iter(runbook))].endswith("More.\n")
    assert repo.branches["main"] == main_before and len(repo.pulls) == 1
    refused = run(github_api, "draft_pr", branch="main", title="x", files=runbook)
    assert "default branch of acme/api" in refused.error


@pytest.mark.parametrize("params,message", [
    ({"branch": "f", "message": "m"}, "give exactly one of files or patch"),
    ({"branch": "f", "message": "m", "files": {"../etc/passwd": "x"}}, "not a plain relative"),
    ({"branch": "f", "message": "m", "files": {"a": "x"}, "patch": PATCH}, "exactly one"),
])
def test_bad_commits_are_refused_before_any_request(github_api, repo, params, message):
    from tools.catalog import Call, CallError
    with pytest.raises(CallError, match=message):
        catalog(github_api.url, default_repos=("acme/api",)).resolve(
            Call(id="c", toolset="github", action="commit", params=params))
    with pytest.raises(CallError, match="not a plain relative"):
        catalog(github_api.url, default_repos=("acme/api",)).resolve(Call(
            id="d", toolset="github", action="draft_pr",
            params={"branch": "f", "title": "t", "files": {"a/../../b": "x"}}))
    assert not github_api.requests


async def test_green_checks_and_an_approval_merge_with_the_checks_on_the_card(github_api, repo,
                                                                              tmp_path):
    number = proposed_pr(github_api, repo)
    repo.required_checks["main"] = ["unit"]
    repo.add_check(repo.branches["fix-burst"], "unit", conclusion="success")
    deps = GraphDeps(
        catalog=catalog(github_api.url, default_repos=("acme/api",)),
        policy=parse_policy("version: 1\ngroups:\n  sre: {users: [UAPPR1]}\n"
                            "defaults:\n  autonomous_max_tier: 2\n  approvers: [sre]\n"),
        executor=InlineExecutor(),
        broker=CredentialBroker(None, {"GITHUB_TOKEN": SecretStr(TOKEN)}),
        audit=SqliteRecords(tmp_path / "audit.sqlite").audit, limits=Limits())
    graph = build_graph(deps, InMemorySaver())
    task = Task(source=Source.SLASH, team="T1", channel="C1", user="UREQ1",
                text=f"github merge number={number} base=main", thread_ts=f"1.{next(_ids)}")
    config = {"configurable": {"thread_id": task.thread_id()}, "recursion_limit": 60}
    await graph.ainvoke({"run_id": "r-merge001", "task": task.model_dump(mode="json")}, config)
    (pending,) = (await graph.aget_state(config)).interrupts
    card = pending.value["review"]["preview"]
    assert "required checks on" in card and "passing" in card and "unit: success" in card
    assert not repo.pulls[number]["merged"]
    decision = {"status": "approved", "by": ["UAPPR1"], "hash": pending.value["review"]["hash"]}
    await graph.ainvoke(Command(resume={pending.id: decision}), config)
    assert repo.pulls[number]["merged"]
    assert files(repo, "main")["conf/limits.yaml"] == "rps: 100\nburst: 50\n"
    assert len(github_api.calls("PUT", f"/repos/acme/api/pulls/{number}/merge")) == 1
    assert json.loads(github_api.calls("PUT", r".*/merge")[0].body)["merge_method"] == "merge"
