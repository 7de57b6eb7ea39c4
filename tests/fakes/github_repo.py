"""The state behind the GitHub emulator: one repository's git objects, PRs, runs and checks.

Git objects are content-addressed like git's (blob SHAs are git's own), so trees and commits
behave as a client expects: the same files give the same tree, a new commit a new SHA. Trees
are stored flat (path → blob SHA). Tests seed state with the methods here and assert on it
after an action ran::

    repo = emulator.add_repo("acme/api", files={"app.py": "VERSION = 1\\n"})
    repo.commit("bump", {"app.py": "VERSION = 2\\n"}, branch="feature")
    number = repo.open_pull("feature", "main", "Bump")
    repo.merge_pull(number, method="squash")
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

EPOCH = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DOCS = "https://docs.github.com/rest"
Changes = dict[str, str | None]  # path -> blob SHA, or None for a deleted file


class ApiError(Exception):
    """An error reply: status code plus GitHub's ``{"message": ...}`` body."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.body = {"message": message, "documentation_url": DOCS, **extra}


def apply(files: dict[str, str], changes: Changes) -> dict[str, str]:
    """``files`` with ``changes`` applied (None deletes the path)."""
    for path, blob in changes.items():
        if blob is None:
            files.pop(path, None)
        else:
            files[path] = blob
    return files


def diff(old: dict[str, str], new: dict[str, str]) -> Changes:
    return {p: new.get(p) for p in old.keys() | new.keys() if old.get(p) != new.get(p)}


def _sha(kind: str, payload: bytes) -> str:
    return hashlib.sha1(f"{kind} {len(payload)}\0".encode() + payload).hexdigest()


@dataclass
class FakeRepo:
    owner: str
    name: str
    base_url: str
    default_branch: str = "main"
    description: str = ""
    private: bool = False
    blobs: dict[str, bytes] = field(default_factory=dict)
    trees: dict[str, dict[str, str]] = field(default_factory=dict)
    commits: dict[str, dict[str, Any]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    check_runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    required_checks: dict[str, list[str]] = field(default_factory=dict)  # branch -> contexts
    clock: int = 0

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def api(self) -> str:
        return f"{self.base_url}/repos/{self.full_name}"

    def tick(self) -> str:
        """A strictly increasing timestamp, so ordering by date is deterministic."""
        self.clock += 1
        return (EPOCH + timedelta(minutes=self.clock)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def next_number(self) -> int:
        return max([0, *self.pulls, *self.issues]) + 1

    # --- git objects ------------------------------------------------------------------------
    def blob(self, content: str | bytes) -> str:
        data = content.encode() if isinstance(content, str) else content
        sha = _sha("blob", data)
        self.blobs[sha] = data
        return sha

    def tree(self, files: dict[str, str]) -> str:
        sha = _sha("tree", json.dumps(files, sort_keys=True).encode())
        self.trees[sha] = dict(files)
        return sha

    def new_commit(self, message: str, tree: str, parents: list[str], author: str = "dev") -> str:
        body = {"message": message, "tree": tree, "parents": parents, "author": author}
        body["date"] = self.tick()
        sha = _sha("commit", json.dumps(body, sort_keys=True).encode())
        self.commits[sha] = body | {"sha": sha}
        return sha

    def resolve(self, ref: str) -> str:
        """A branch name, full SHA or unique SHA prefix → commit SHA (422 like GitHub if none)."""
        if ref in self.branches:
            return self.branches[ref]
        hits = [s for s in self.commits if s.startswith(ref)] if len(ref) >= 4 else []
        if len(hits) != 1:
            raise ApiError(422, f"No commit found for SHA: {ref}")
        return hits[0]

    def files_at(self, ref: str) -> dict[str, str]:
        return self.trees[self.commits[self.resolve(ref)]["tree"]]

    def commit(
        self, message: str, changes: dict[str, str | bytes | None], branch: str | None = None
    ) -> str:
        """Commit file contents (None deletes) on ``branch``, creating it from the default."""
        branch = branch or self.default_branch
        start = self.branches.get(branch) or self.branches.get(self.default_branch)
        files = dict(self.trees[self.commits[start]["tree"]]) if start else {}
        blobs = {p: None if text is None else self.blob(text) for p, text in changes.items()}
        tree = self.tree(apply(files, blobs))
        self.branches[branch] = self.new_commit(message, tree, [start] if start else [])
        return self.branches[branch]

    def ancestors(self, sha: str) -> set[str]:
        seen, todo = set(), [sha]
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo += self.commits[current]["parents"]
        return seen

    # --- pull requests ----------------------------------------------------------------------
    def open_pull(
        self, head: str, base: str, title: str, body: str = "", user: str = "dev", draft=False
    ) -> int:
        number = self.next_number()
        self.pulls[number] = {
            "number": number, "title": title, "body": body, "user": user, "draft": draft,
            "head": head, "base": base, "base_sha": self.branches[base], "state": "open",
            "merged": False, "merge_commit_sha": None, "head_sha": None, "created": self.tick(),
        }  # fmt: skip
        return number

    def head_sha(self, pull: dict[str, Any]) -> str:
        return pull["head_sha"] or self.branches[pull["head"]]

    def pull_commits(self, pull: dict[str, Any]) -> list[str]:
        """The PR's own commits, oldest first (first-parent chain down to the base)."""
        stop, chain, sha = self.ancestors(pull["base_sha"]), [], self.head_sha(pull)
        while sha not in stop:
            chain.append(sha)
            sha = self.commits[sha]["parents"][0]
        return chain[::-1]

    def changes(self, pull: dict[str, Any]) -> Changes:
        base = self.trees[self.commits[pull["base_sha"]]["tree"]]
        return diff(base, self.files_at(self.head_sha(pull)))

    def conflicts(self, pull: dict[str, Any]) -> bool:
        old, now = self.trees[self.commits[pull["base_sha"]]["tree"]], self.files_at(pull["base"])
        return any(old.get(p) != now.get(p) for p in self.changes(pull))

    def merge_pull(self, number: int, method: str = "merge", title: str | None = None) -> str:
        """Merge like GitHub: a merge commit, one squashed commit, or the commits replayed."""
        pull = self.pulls[number]
        head = self.head_sha(pull)
        if method == "rebase":
            sha = self._replay(pull)
        else:
            files = apply(dict(self.files_at(pull["base"])), self.changes(pull))
            parents = [self.branches[pull["base"]]] + ([head] if method == "merge" else [])
            default = f"Merge pull request #{number} from {pull['head']}"
            if method == "squash":
                default = f"{pull['title']} (#{number})"
            sha = self.new_commit(title or default, self.tree(files), parents)
        self.branches[pull["base"]] = sha
        pull.update(state="closed", merged=True, merge_commit_sha=sha, head_sha=head)
        return sha

    def _replay(self, pull: dict[str, Any]) -> str:
        tip = self.branches[pull["base"]]
        for sha in self.pull_commits(pull):
            commit = self.commits[sha]
            parent_files = self.trees[self.commits[commit["parents"][0]]["tree"]]
            step = diff(parent_files, self.trees[commit["tree"]])
            files = apply(dict(self.trees[self.commits[tip]["tree"]]), step)
            tip = self.new_commit(commit["message"], self.tree(files), [tip], commit["author"])
        return tip

    # --- CI -----------------------------------------------------------------------------------
    def add_run(
        self, name: str, branch: str, status="completed", conclusion="success", event="push"
    ) -> int:
        run_id = 1000 + len(self.runs) + 1
        self.runs[run_id] = {
            "id": run_id, "name": name, "run_number": len(self.runs) + 1, "run_attempt": 1,
            "status": status, "conclusion": conclusion, "head_branch": branch, "event": event,
            "head_sha": self.branches[branch], "created_at": self.tick(),
        }  # fmt: skip
        return run_id

    def add_check(self, ref: str, name: str, status="completed", conclusion="success") -> None:
        sha = self.resolve(ref)
        runs = self.check_runs.setdefault(sha, [])
        runs.append(
            {"id": 5000 + len(runs), "name": name, "status": status,
             "conclusion": conclusion, "head_sha": sha}
        )  # fmt: skip

    def add_status(self, ref: str, context: str, state: str, description: str = "") -> None:
        sha = self.resolve(ref)
        entry = {"context": context, "state": state, "description": description}
        self.statuses.setdefault(sha, []).append(entry)
