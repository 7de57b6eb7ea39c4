"""The REST JSON shapes the GitHub emulator answers with, built from :class:`FakeRepo` state.

Only the fields PyGithub reads for opsbot's actions are filled, but every object carries its
``url`` (pointing back at the emulator), as PyGithub completes lazy objects by fetching it.
"""

from __future__ import annotations

import base64
import difflib
from datetime import timedelta
from typing import Any

from tests.fakes.github_repo import EPOCH, FakeRepo

WEB = "https://github.com"


def user(repo: FakeRepo, login: str) -> dict[str, Any]:
    return {
        "login": login,
        "id": sum(map(ord, login)),
        "type": "User",
        "url": f"{repo.base_url}/users/{login}",
        "html_url": f"{WEB}/{login}",
    }


def repository(repo: FakeRepo) -> dict[str, Any]:
    items = [*repo.pulls.values(), *repo.issues.values()]
    return {
        "id": sum(map(ord, repo.full_name)),
        "name": repo.name,
        "full_name": repo.full_name,
        "owner": user(repo, repo.owner),
        "private": repo.private,
        "visibility": "private" if repo.private else "public",
        "description": repo.description,
        "default_branch": repo.default_branch,
        "url": repo.api,
        "html_url": f"{WEB}/{repo.full_name}",
        "fork": False,
        "archived": False,
        "open_issues_count": sum(1 for x in items if x["state"] == "open"),
        "pushed_at": (EPOCH + timedelta(minutes=repo.clock)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _person(c: dict[str, Any]) -> dict[str, Any]:
    return {"name": c["author"], "email": f"{c['author']}@example.com", "date": c["date"]}


def git_commit(repo: FakeRepo, sha: str) -> dict[str, Any]:
    c = repo.commits[sha]
    return {
        "sha": sha,
        "url": f"{repo.api}/git/commits/{sha}",
        "message": c["message"],
        "author": _person(c),
        "committer": _person(c),
        "tree": {"sha": c["tree"], "url": f"{repo.api}/git/trees/{c['tree']}"},
        "parents": [{"sha": p, "url": f"{repo.api}/git/commits/{p}"} for p in c["parents"]],
    }


def commit(repo: FakeRepo, sha: str, with_files: bool = False) -> dict[str, Any]:
    c = repo.commits[sha]
    out = {
        "sha": sha,
        "url": f"{repo.api}/commits/{sha}",
        "html_url": f"{WEB}/{repo.full_name}/commit/{sha}",
        "commit": git_commit(repo, sha),
        "author": user(repo, c["author"]),
        "committer": user(repo, c["author"]),
        "parents": [{"sha": p, "url": f"{repo.api}/commits/{p}"} for p in c["parents"]],
    }
    if with_files and c["parents"]:
        out["files"] = files_diff(repo, repo.files_at(c["parents"][0]), repo.files_at(sha))
    return out


def _lines(repo: FakeRepo, blob: str | None) -> list[str]:
    return repo.blobs[blob].decode(errors="replace").splitlines() if blob else []


def files_diff(repo: FakeRepo, old: dict[str, str], new: dict[str, str]) -> list[dict[str, Any]]:
    """The ``files`` entries of a PR or commit: status, +/- counts and a unified patch."""
    out = []
    for path in sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p)):
        before, after = _lines(repo, old.get(path)), _lines(repo, new.get(path))
        patch = list(difflib.unified_diff(before, after, lineterm="", n=1))[2:]
        plus = sum(1 for x in patch if x.startswith("+"))
        minus = sum(1 for x in patch if x.startswith("-"))
        status = "added" if path not in old else "removed" if path not in new else "modified"
        out.append(
            {"sha": new.get(path) or old[path], "filename": path, "status": status,
             "additions": plus, "deletions": minus, "changes": plus + minus,
             "patch": "\n".join(patch), "blob_url": "", "raw_url": "", "contents_url": ""}
        )  # fmt: skip
    return out


def pull(repo: FakeRepo, p: dict[str, Any]) -> dict[str, Any]:
    conflicted = p["state"] == "open" and repo.conflicts(p)
    side = {"repo": repository(repo), "user": user(repo, repo.owner)}
    head, base = p["head"], p["base"]
    return {
        "url": f"{repo.api}/pulls/{p['number']}",
        "id": 90000 + p["number"],
        "number": p["number"],
        "state": p["state"],
        "title": p["title"],
        "body": p["body"],
        "user": user(repo, p["user"]),
        "draft": p["draft"],
        "merged": p["merged"],
        "merge_commit_sha": p["merge_commit_sha"],
        "mergeable": not conflicted,
        "mergeable_state": "dirty" if conflicted else "clean",
        "commits": len(repo.pull_commits(p)),
        "head": side | {"ref": head, "sha": repo.head_sha(p), "label": f"{repo.owner}:{head}"},
        "base": side | {"ref": base, "sha": repo.branches[base], "label": f"{repo.owner}:{base}"},
        "html_url": f"{WEB}/{repo.full_name}/pull/{p['number']}",
        "issue_url": f"{repo.api}/issues/{p['number']}",
        "created_at": p["created"],
        "updated_at": p["created"],
    }


def workflow_run(repo: FakeRepo, r: dict[str, Any]) -> dict[str, Any]:
    url = f"{repo.api}/actions/runs/{r['id']}"
    return r | {
        "url": url,
        "rerun_url": f"{url}/rerun",
        "html_url": f"{WEB}/{repo.full_name}/actions/runs/{r['id']}",
        "updated_at": r["created_at"],
        "display_title": r["name"],
        "workflow_id": 77,
        "path": ".github/workflows/ci.yml",
    }


def check_run(repo: FakeRepo, c: dict[str, Any]) -> dict[str, Any]:
    output = {"title": None, "summary": None}
    return c | {"url": f"{repo.api}/check-runs/{c['id']}", "html_url": "", "output": output}


def content(repo: FakeRepo, path: str, blob: str | None, ref: str) -> dict[str, Any]:
    """A file (base64, like GitHub) when ``blob`` is given, else a directory entry."""
    kind: dict[str, Any] = {"type": "dir", "sha": "0" * 40}
    if blob:
        data = repo.blobs[blob]
        encoded = base64.b64encode(data).decode()
        kind = {"type": "file", "encoding": "base64", "size": len(data), "content": encoded}
        kind["sha"] = blob
    return kind | {
        "name": path.rsplit("/", 1)[-1],
        "path": path,
        "url": f"{repo.api}/contents/{path}?ref={ref}",
        "html_url": f"{WEB}/{repo.full_name}/blob/{ref}/{path}",
        "git_url": None,
        "download_url": None,
    }


def tree(repo: FakeRepo, sha: str, recursive: bool) -> dict[str, Any]:
    """A git tree: blobs (and sub-trees) at the top level, or every entry when recursive."""
    files, entries, dirs = repo.trees[sha], [], set()
    for path, blob in sorted(files.items()):
        parts = path.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        if recursive or len(parts) == 1:
            entries.append(
                {"path": path, "mode": "100644", "type": "blob", "sha": blob,
                 "size": len(repo.blobs[blob]), "url": f"{repo.api}/git/blobs/{blob}"}
            )  # fmt: skip
    for d in sorted(x for x in dirs if recursive or "/" not in x):
        sub = repo.tree({p[len(d) + 1 :]: b for p, b in files.items() if p.startswith(d + "/")})
        entries.append(
            {"path": d, "mode": "040000", "type": "tree", "sha": sub,
             "url": f"{repo.api}/git/trees/{sub}"}
        )  # fmt: skip
    return {"sha": sha, "url": f"{repo.api}/git/trees/{sha}", "tree": entries, "truncated": False}


def issue(repo: FakeRepo, i: dict[str, Any]) -> dict[str, Any]:
    return i | {
        "url": f"{repo.api}/issues/{i['number']}",
        "id": 70000 + i["number"],
        "user": user(repo, i["user"]),
        "labels": [{"name": n, "color": "ededed"} for n in i["labels"]],
        "html_url": f"{WEB}/{repo.full_name}/issues/{i['number']}",
    }


def git_ref(repo: FakeRepo, branch: str) -> dict[str, Any]:
    sha = repo.branches[branch]
    target = {"sha": sha, "type": "commit", "url": f"{repo.api}/git/commits/{sha}"}
    return {
        "ref": f"refs/heads/{branch}",
        "url": f"{repo.api}/git/refs/heads/{branch}",
        "object": target,
    }


def combined_status(repo: FakeRepo, sha: str) -> dict[str, Any]:
    statuses = [
        s | {"id": i + 1, "url": f"{repo.api}/statuses/{sha}", "target_url": None}
        for i, s in enumerate(repo.statuses.get(sha, []))
    ]
    states = {s["state"] for s in statuses}
    state = "success"
    if states & {"failure", "error"}:
        state = "failure"
    elif not states or states - {"success"}:
        state = "pending"
    return {
        "state": state,
        "sha": sha,
        "total_count": len(statuses),
        "statuses": statuses,
        "repository": repository(repo),
        "url": f"{repo.api}/commits/{sha}/status",
    }


def comment(repo: FakeRepo, number: int, c: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": c["id"],
        "body": c["body"],
        "user": user(repo, c["user"]),
        "created_at": c["created_at"],
        "url": f"{repo.api}/issues/comments/{c['id']}",
        "html_url": f"{WEB}/{repo.full_name}/issues/{number}#issuecomment-{c['id']}",
        "issue_url": f"{repo.api}/issues/{number}",
    }
