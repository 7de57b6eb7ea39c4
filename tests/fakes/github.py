"""A GitHub REST API emulator: a real HTTP server on loopback that PyGithub talks to.

It speaks the REST shapes opsbot's GitHub connector needs: repositories, pull requests (+ files,
merge), commits (+ check runs, combined status), Actions runs (+ re-run), contents, issues, and
the git data API (refs, commits, trees) used to build a revert. State is seeded through
:class:`FakeRepo`; git objects get content-addressed SHAs, so trees and commits behave like git's.
Every request is recorded (``requests``) and ``all_text()`` joins them for canary checks.

Usage::

    with GitHubEmulator(token="ghp_x") as gh:
        repo = gh.add_repo("acme/api", files={"app.py": "print(1)\\n"})
        repo.commit("fix", {"app.py": "print(2)\\n"}, branch="hotfix")
        number = repo.open_pull("hotfix", "main", "Fix the thing")
        Github(base_url=gh.url, auth=Auth.Token("ghp_x")).get_repo("acme/api")
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

Reply = tuple[int, Any]
EPOCH = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
DOCS = "https://docs.github.com/rest"


class ApiError(Exception):
    """An error reply: status code plus GitHub's ``{"message": ...}`` body."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.body = status, {"message": message, "documentation_url": DOCS, **extra}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: str


def _apply(files: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    """Path → blob SHA map with ``changes`` applied (None deletes the path)."""
    for path, blob in changes.items():
        if blob is None:
            files.pop(path, None)
        else:
            files[path] = blob
    return files


def _sha(kind: str, payload: bytes) -> str:
    return hashlib.sha1(f"{kind} {len(payload)}\0".encode() + payload).hexdigest()


@dataclass
class FakeRepo:
    """One repository's state: git objects, branches, PRs, issues, workflow runs, checks."""

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
    clock: int = 0

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def api(self) -> str:
        return f"{self.base_url}/repos/{self.full_name}"

    def tick(self) -> str:
        self.clock += 1
        return (EPOCH + timedelta(minutes=self.clock)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _number(self) -> int:
        return max([0, *self.pulls, *self.issues]) + 1

    # --- git objects -------------------------------------------------------------------------
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
        when = self.tick()
        body = {"message": message, "tree": tree, "parents": parents, "author": author, "date": when}
        sha = _sha("commit", json.dumps(body, sort_keys=True).encode())
        self.commits[sha] = body | {"sha": sha}
        return sha

    def files_at(self, ref: str) -> dict[str, str]:
        return self.trees[self.commits[self.resolve(ref)]["tree"]]

    def resolve(self, ref: str) -> str:
        """A branch name, full SHA or unique SHA prefix → commit SHA (422 like GitHub if none)."""
        if ref in self.branches:
            return self.branches[ref]
        hits = [s for s in self.commits if s.startswith(ref)] if len(ref) >= 4 else []
        if len(hits) != 1:
            raise ApiError(422, f"No commit found for SHA: {ref}")
        return hits[0]

    def commit(self, message: str, changes: dict[str, str | None], branch: str | None = None,
               author: str = "dev") -> str:
        """Commit file changes (None deletes) on ``branch``, creating it from the default."""
        branch = branch or self.default_branch
        start = self.branches.get(branch) or self.branches.get(self.default_branch)
        files = dict(self.trees[self.commits[start]["tree"]]) if start else {}
        blobs = {path: None if text is None else self.blob(text) for path, text in changes.items()}
        sha = self.new_commit(message, self.tree(_apply(files, blobs)), [start] if start else [], author)
        self.branches[branch] = sha
        return sha

    # --- pull requests, runs, checks ----------------------------------------------------------
    def open_pull(self, head: str, base: str, title: str, body: str = "", user: str = "dev",
                  draft: bool = False) -> int:
        number = self._number()
        self.pulls[number] = {
            "number": number, "title": title, "body": body, "user": user, "draft": draft,
            "head": head, "base": base, "base_sha": self.branches[base], "state": "open",
            "merged": False, "merge_commit_sha": None, "head_sha": None, "created": self.tick(),
        }
        return number

    def head_sha(self, pull: dict[str, Any]) -> str:
        return pull["head_sha"] or self.branches[pull["head"]]

    def changes(self, pull: dict[str, Any]) -> dict[str, str | None]:
        old, new = self.trees[self.commits[pull["base_sha"]]["tree"]], self.files_at(self.head_sha(pull))
        return {p: new.get(p) for p in old.keys() | new.keys() if old.get(p) != new.get(p)}

    def conflicts(self, pull: dict[str, Any]) -> bool:
        old, now = self.trees[self.commits[pull["base_sha"]]["tree"]], self.files_at(pull["base"])
        return any(old.get(p) != now.get(p) for p in self.changes(pull))

    def merge_pull(self, number: int, method: str = "merge", title: str | None = None) -> str:
        pull = self.pulls[number]
        files = _apply(dict(self.files_at(pull["base"])), self.changes(pull))
        head = self.head_sha(pull)
        parents = [self.branches[pull["base"]]] + ([head] if method == "merge" else [])
        message = title or f"Merge pull request #{number} from {pull['head']}"
        sha = self.new_commit(message, self.tree(files), parents)
        self.branches[pull["base"]] = sha
        pull.update(state="closed", merged=True, merge_commit_sha=sha, head_sha=head)
        return sha

    def add_run(self, name: str, branch: str, status: str = "completed",
                conclusion: str | None = "success", event: str = "push") -> int:
        run_id = 1000 + len(self.runs) + 1
        self.runs[run_id] = {
            "id": run_id, "name": name, "run_number": len(self.runs) + 1, "run_attempt": 1,
            "status": status, "conclusion": conclusion, "head_branch": branch, "event": event,
            "head_sha": self.branches[branch], "created_at": self.tick(),
        }
        return run_id

    def add_check(self, ref: str, name: str, status: str = "completed",
                  conclusion: str | None = "success") -> None:
        sha = self.resolve(ref)
        runs = self.check_runs.setdefault(sha, [])
        runs.append({"id": 5000 + len(runs), "name": name, "status": status,
                     "conclusion": conclusion, "head_sha": sha})

    def add_status(self, ref: str, context: str, state: str, description: str = "") -> None:
        sha = self.resolve(ref)
        self.statuses.setdefault(sha, []).append(
            {"context": context, "state": state, "description": description})


class GitHubEmulator:
    """The HTTP server plus the state of every seeded repository."""

    def __init__(self, token: str = "ghp_emulator_token"):
        self.tokens = {token}
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> GitHubEmulator:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_repo(self, full_name: str, files: dict[str, str] | None = None, **kw: Any) -> FakeRepo:
        owner, name = full_name.split("/")
        repo = FakeRepo(owner=owner, name=name, base_url=self.url, **kw)
        repo.commit("Initial commit", dict(files or {"README.md": f"# {name}\n"}))
        self.repos[full_name.lower()] = repo
        return repo

    def all_text(self) -> str:
        """Everything any client sent (request lines, headers, bodies), for canary checks."""
        parts = []
        for r in self.requests:
            parts.append(f"{r.method} {r.path} {json.dumps(r.query)}")
            parts += [f"{k}: {v}" for k, v in r.headers.items()] + [r.body]
        return "\n".join(parts)

    def calls(self, method: str, path_pattern: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and re.fullmatch(path_pattern, r.path)]

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> Reply:
        match = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)?", path)
        repo = self.repos.get(f"{match[1]}/{match[2]}".lower()) if match else None
        if repo is None:
            raise ApiError(404, "Not Found")
        rest = match[3] or ""
        for verb, pattern, fn in ROUTES:
            found = re.fullmatch(pattern, rest)
            if verb == method and found:
                with self._lock:
                    return fn(repo, query, body, *[unquote(g) for g in found.groups()])
        raise ApiError(404, "Not Found")


def _handler(emulator: GitHubEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 1 << 16  # one write per reply: no Nagle / delayed-ACK stalls on keep-alive

        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            query = dict(parse_qsl(parts.query))
            emulator.requests.append(Recorded(self.command, parts.path, query, dict(self.headers), raw))
            try:
                self._authorize()
                status, payload = emulator.handle(self.command, parts.path, query, json.loads(raw or "null"))
                status, payload, link = _paginate(status, payload, query, emulator.url + parts.path)
            except ApiError as e:
                status, payload, link = e.status, e.body, None
            self._send(status, payload, link)

        def _authorize(self) -> None:
            scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
            if not token:
                raise ApiError(401, "Requires authentication")
            if scheme.lower() not in ("token", "bearer") or token not in emulator.tokens:
                raise ApiError(401, "Bad credentials")

        def _send(self, status: int, payload: Any, link: str | None) -> None:
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            if link:
                self.send_header("Link", link)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler


class Page(list):
    """A list reply that is paginated (``per_page``/``page``); ``key`` wraps it like Actions."""

    def __init__(self, items: list[Any], key: str | None = None):
        super().__init__(items)
        self.key = key


def _paginate(status: int, payload: Any, query: dict[str, str], url: str) -> tuple[int, Any, str | None]:
    if not isinstance(payload, Page):
        return status, payload, None
    per_page, page = int(query.get("per_page", 30)), int(query.get("page", 1))
    items = payload[(page - 1) * per_page: page * per_page]
    link = None
    if page * per_page < len(payload):
        rest = "&".join(f"{k}={v}" for k, v in query.items() if k != "page")
        link = f'<{url}?{rest}&page={page + 1}>; rel="next"'
    body = {"total_count": len(payload), payload.key: items} if payload.key else list(items)
    return status, body, link


# --- JSON shapes ---------------------------------------------------------------------------------
def _user(repo: FakeRepo, login: str) -> dict[str, Any]:
    return {"login": login, "id": abs(hash(login)) % 10**6, "type": "User",
            "url": f"{repo.base_url}/users/{login}", "html_url": f"https://github.com/{login}"}


def repo_json(repo: FakeRepo) -> dict[str, Any]:
    return {
        "id": abs(hash(repo.full_name)) % 10**6, "name": repo.name, "full_name": repo.full_name,
        "owner": _user(repo, repo.owner), "private": repo.private, "description": repo.description,
        "default_branch": repo.default_branch, "url": repo.api, "fork": False, "archived": False,
        "html_url": f"https://github.com/{repo.full_name}", "visibility": "private" if repo.private else "public",
        "open_issues_count": sum(1 for x in [*repo.pulls.values(), *repo.issues.values()] if x["state"] == "open"),
        "pushed_at": (EPOCH + timedelta(minutes=repo.clock)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def commit_json(repo: FakeRepo, sha: str, files: bool = False) -> dict[str, Any]:
    c = repo.commits[sha]
    person = {"name": c["author"], "email": f"{c['author']}@example.com", "date": c["date"]}
    out = {
        "sha": sha, "url": f"{repo.api}/commits/{sha}", "html_url": f"https://github.com/{repo.full_name}/commit/{sha}",
        "commit": {"message": c["message"], "author": person, "committer": person,
                   "tree": {"sha": c["tree"], "url": f"{repo.api}/git/trees/{c['tree']}"},
                   "url": f"{repo.api}/git/commits/{sha}"},
        "author": _user(repo, c["author"]), "committer": _user(repo, c["author"]),
        "parents": [{"sha": p, "url": f"{repo.api}/commits/{p}"} for p in c["parents"]],
    }
    if files and c["parents"]:
        out["files"] = _diff(repo, repo.files_at(c["parents"][0]), repo.files_at(sha))
    return out


def git_commit_json(repo: FakeRepo, sha: str) -> dict[str, Any]:
    c = repo.commits[sha]
    person = {"name": c["author"], "email": f"{c['author']}@example.com", "date": c["date"]}
    return {
        "sha": sha, "url": f"{repo.api}/git/commits/{sha}", "message": c["message"],
        "author": person, "committer": person,
        "tree": {"sha": c["tree"], "url": f"{repo.api}/git/trees/{c['tree']}"},
        "parents": [{"sha": p, "url": f"{repo.api}/git/commits/{p}"} for p in c["parents"]],
    }


def _lines(repo: FakeRepo, blob: str | None) -> list[str]:
    return repo.blobs[blob].decode(errors="replace").splitlines() if blob else []


def _diff(repo: FakeRepo, old: dict[str, str], new: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for path in sorted(old.keys() | new.keys()):
        if old.get(path) == new.get(path):
            continue
        a, b = _lines(repo, old.get(path)), _lines(repo, new.get(path))
        patch = list(difflib.unified_diff(a, b, lineterm="", n=1))[2:]
        plus = sum(1 for x in patch if x.startswith("+"))
        minus = sum(1 for x in patch if x.startswith("-"))
        status = "added" if path not in old else "removed" if path not in new else "modified"
        out.append({"sha": new.get(path) or old[path], "filename": path, "status": status,
                    "additions": plus, "deletions": minus, "changes": plus + minus,
                    "patch": "\n".join(patch), "blob_url": "", "raw_url": "", "contents_url": ""})
    return out


def pull_json(repo: FakeRepo, p: dict[str, Any]) -> dict[str, Any]:
    url = f"{repo.api}/pulls/{p['number']}"
    branch = {"repo": repo_json(repo), "user": _user(repo, repo.owner)}
    conflicted = p["state"] == "open" and repo.conflicts(p)
    return {
        "url": url, "id": 90000 + p["number"], "number": p["number"], "state": p["state"],
        "title": p["title"], "body": p["body"], "user": _user(repo, p["user"]), "draft": p["draft"],
        "merged": p["merged"], "merge_commit_sha": p["merge_commit_sha"],
        "mergeable": not conflicted, "mergeable_state": "dirty" if conflicted else "clean",
        "head": branch | {"ref": p["head"], "sha": repo.head_sha(p), "label": f"{repo.owner}:{p['head']}"},
        "base": branch | {"ref": p["base"], "sha": repo.branches[p["base"]], "label": f"{repo.owner}:{p['base']}"},
        "html_url": f"https://github.com/{repo.full_name}/pull/{p['number']}",
        "issue_url": f"{repo.api}/issues/{p['number']}", "created_at": p["created"], "updated_at": p["created"],
    }


def run_json(repo: FakeRepo, r: dict[str, Any]) -> dict[str, Any]:
    url = f"{repo.api}/actions/runs/{r['id']}"
    return r | {"url": url, "rerun_url": f"{url}/rerun", "updated_at": r["created_at"],
                "html_url": f"https://github.com/{repo.full_name}/actions/runs/{r['id']}",
                "display_title": r["name"], "workflow_id": 77, "path": ".github/workflows/ci.yml"}


def content_json(repo: FakeRepo, path: str, blob: str | None, ref: str) -> dict[str, Any]:
    url = f"{repo.api}/contents/{path}?ref={ref}"
    kind = {"type": "file", "encoding": "base64", "size": len(repo.blobs[blob]),
            "content": base64.b64encode(repo.blobs[blob]).decode(), "sha": blob} if blob else {"type": "dir", "sha": "0" * 40}
    return kind | {"name": path.rsplit("/", 1)[-1], "path": path, "url": url, "git_url": None,
                   "html_url": f"https://github.com/{repo.full_name}/blob/{ref}/{path}", "download_url": None}


def tree_json(repo: FakeRepo, sha: str, recursive: bool) -> dict[str, Any]:
    files = repo.trees[sha]
    entries, dirs = [], set()
    for path, blob in sorted(files.items()):
        parts = path.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        if recursive or len(parts) == 1:
            entries.append({"path": path, "mode": "100644", "type": "blob", "sha": blob,
                            "size": len(repo.blobs[blob]), "url": f"{repo.api}/git/blobs/{blob}"})
    for d in sorted(dirs):
        if recursive or "/" not in d:
            sub = repo.tree({p[len(d) + 1:]: b for p, b in files.items() if p.startswith(d + "/")})
            entries.append({"path": d, "mode": "040000", "type": "tree", "sha": sub, "url": f"{repo.api}/git/trees/{sub}"})
    return {"sha": sha, "url": f"{repo.api}/git/trees/{sha}", "tree": entries, "truncated": False}


def issue_json(repo: FakeRepo, i: dict[str, Any]) -> dict[str, Any]:
    return i | {"url": f"{repo.api}/issues/{i['number']}", "id": 70000 + i["number"],
                "user": _user(repo, i["user"]), "labels": [{"name": n, "color": "ededed"} for n in i["labels"]],
                "html_url": f"https://github.com/{repo.full_name}/issues/{i['number']}"}


# --- routes ----------------------------------------------------------------------------------------
def _pull(repo: FakeRepo, number: str) -> dict[str, Any]:
    if int(number) not in repo.pulls:
        raise ApiError(404, "Not Found")
    return repo.pulls[int(number)]


def get_repo(repo, q, body) -> Reply:
    return 200, repo_json(repo)


def list_pulls(repo, q, body) -> Reply:
    state = q.get("state", "open")
    pulls = [p for p in repo.pulls.values() if state == "all" or p["state"] == state]
    pulls = [p for p in pulls if p["base"] == q.get("base", p["base"])]
    pulls.sort(key=lambda p: p["number"], reverse=q.get("direction", "desc") == "desc")
    return 200, Page([pull_json(repo, p) for p in pulls])


def get_pull(repo, q, body, number) -> Reply:
    return 200, pull_json(repo, _pull(repo, number))


def pull_files(repo, q, body, number) -> Reply:
    p = _pull(repo, number)
    old = repo.trees[repo.commits[p["base_sha"]]["tree"]]
    return 200, Page(_diff(repo, old, repo.files_at(repo.head_sha(p))))


def create_pull(repo, q, body) -> Reply:
    for key in ("head", "base", "title"):
        if not body.get(key) or (key != "title" and body[key] not in repo.branches):
            raise ApiError(422, "Validation Failed", errors=[{"resource": "PullRequest", "field": key, "code": "invalid"}])
    if repo.branches[body["head"]] == repo.branches[body["base"]]:
        raise ApiError(422, "Validation Failed", errors=[{"message": f"No commits between {body['base']} and {body['head']}"}])
    number = repo.open_pull(body["head"], body["base"], body["title"], body.get("body") or "", "opsbot", bool(body.get("draft")))
    return 201, pull_json(repo, repo.pulls[number])


def merge_pull(repo, q, body, number) -> Reply:
    p, body = _pull(repo, number), body or {}
    if p["state"] != "open" or repo.conflicts(p):
        raise ApiError(405, "Pull Request is not mergeable")
    if p["draft"]:
        raise ApiError(405, "Pull Request is still a draft")
    if body.get("sha") and body["sha"] != repo.head_sha(p):
        raise ApiError(409, "Head branch was modified. Review and try the merge again.")
    sha = repo.merge_pull(p["number"], body.get("merge_method", "merge"), body.get("commit_title"))
    return 200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}


def list_commits(repo, q, body) -> Reply:
    seen, todo = {}, [repo.resolve(q.get("sha", repo.default_branch))]
    while todo:
        sha = todo.pop()
        if sha not in seen:
            seen[sha] = repo.commits[sha]
            todo += repo.commits[sha]["parents"]
    ordered = sorted(seen.values(), key=lambda c: c["date"], reverse=True)
    return 200, Page([commit_json(repo, c["sha"]) for c in ordered])


def get_commit(repo, q, body, ref) -> Reply:
    return 200, commit_json(repo, repo.resolve(ref), files=True)


def check_runs(repo, q, body, ref) -> Reply:
    sha = repo.resolve(ref)
    runs = [c | {"url": f"{repo.api}/check-runs/{c['id']}", "html_url": "", "output": {"title": None, "summary": None}}
            for c in repo.check_runs.get(sha, [])]
    return 200, Page(runs, key="check_runs")


def combined_status(repo, q, body, ref) -> Reply:
    sha = repo.resolve(ref)
    statuses = [s | {"id": i + 1, "url": f"{repo.api}/statuses/{sha}", "target_url": None}
                for i, s in enumerate(repo.statuses.get(sha, []))]
    states = {s["state"] for s in statuses}
    state = "failure" if states & {"failure", "error"} else "pending" if states - {"success"} or not states else "success"
    return 200, {"state": state, "sha": sha, "total_count": len(statuses), "statuses": statuses,
                 "repository": repo_json(repo), "url": f"{repo.api}/commits/{sha}/status"}


def list_runs(repo, q, body) -> Reply:
    runs = sorted(repo.runs.values(), key=lambda r: r["id"], reverse=True)
    runs = [r for r in runs if r["head_branch"] == q.get("branch", r["head_branch"])]
    if "status" in q:
        runs = [r for r in runs if q["status"] in (r["status"], r["conclusion"])]
    return 200, Page([run_json(repo, r) for r in runs], key="workflow_runs")


def _run(repo: FakeRepo, run_id: str) -> dict[str, Any]:
    if int(run_id) not in repo.runs:
        raise ApiError(404, "Not Found")
    return repo.runs[int(run_id)]


def get_run(repo, q, body, run_id) -> Reply:
    return 200, run_json(repo, _run(repo, run_id))


def rerun(repo, q, body, run_id, what) -> Reply:
    run = _run(repo, run_id)
    if run["status"] != "completed":
        raise ApiError(403, "This workflow is already running")
    if what == "rerun-failed-jobs" and run["conclusion"] == "success":
        raise ApiError(403, "This workflow run cannot be rerun")
    run.update(status="queued", conclusion=None, run_attempt=run["run_attempt"] + 1)
    return 201, {}


def get_contents(repo, q, body, path) -> Reply:
    ref = q.get("ref", repo.default_branch)
    files = repo.files_at(ref) if ref in repo.branches else repo.files_at(repo.resolve(ref))
    if path in files:
        return 200, content_json(repo, path, files[path], ref)
    below = sorted({p[len(path) + 1:].split("/")[0] for p in files if p.startswith(path.rstrip("/") + "/")})
    if not below:
        raise ApiError(404, "Not Found")
    return 200, [content_json(repo, f"{path}/{n}", files.get(f"{path}/{n}"), ref) for n in below]


def get_ref(repo, q, body, branch) -> Reply:
    if branch not in repo.branches:
        raise ApiError(404, "Not Found")
    sha = repo.branches[branch]
    return 200, {"ref": f"refs/heads/{branch}", "url": f"{repo.api}/git/refs/heads/{branch}",
                 "object": {"sha": sha, "type": "commit", "url": f"{repo.api}/git/commits/{sha}"}}


def create_ref(repo, q, body) -> Reply:
    name = (body.get("ref") or "").removeprefix("refs/heads/")
    if name in repo.branches:
        raise ApiError(422, "Reference already exists")
    if body.get("sha") not in repo.commits or not name:
        raise ApiError(422, "Object does not exist")
    repo.branches[name] = body["sha"]
    return 201, get_ref(repo, q, body, name)[1]


def get_git_commit(repo, q, body, sha) -> Reply:
    if sha not in repo.commits:
        raise ApiError(404, "Not Found")
    return 200, git_commit_json(repo, sha)


def create_git_commit(repo, q, body) -> Reply:
    if body.get("tree") not in repo.trees or any(p not in repo.commits for p in body.get("parents", [])):
        raise ApiError(422, "Tree SHA does not exist")
    sha = repo.new_commit(body["message"], body["tree"], list(body.get("parents", [])), "opsbot")
    return 201, git_commit_json(repo, sha)


def get_tree(repo, q, body, ref) -> Reply:
    sha = ref if ref in repo.trees else repo.commits[repo.resolve(ref)]["tree"]
    return 200, tree_json(repo, sha, q.get("recursive") not in (None, "0", "false"))


def create_tree(repo, q, body) -> Reply:
    files = dict(repo.trees.get(body.get("base_tree") or "", {}))
    for entry in body.get("tree", []):
        if entry.get("sha") is None and "content" not in entry:
            files.pop(entry["path"], None)
        else:
            files[entry["path"]] = repo.blob(entry["content"]) if "content" in entry else entry["sha"]
    return 201, tree_json(repo, repo.tree(files), True)


def create_issue(repo, q, body) -> Reply:
    if not (body or {}).get("title"):
        raise ApiError(422, "Validation Failed", errors=[{"resource": "Issue", "field": "title", "code": "missing_field"}])
    number = repo._number()
    repo.issues[number] = {"number": number, "title": body["title"], "body": body.get("body"), "state": "open",
                           "labels": body.get("labels", []), "user": "opsbot", "created_at": repo.tick()}
    return 201, issue_json(repo, repo.issues[number])


ROUTES = [
    ("GET", r"", get_repo),
    ("GET", r"/pulls", list_pulls),
    ("POST", r"/pulls", create_pull),
    ("GET", r"/pulls/(\d+)", get_pull),
    ("GET", r"/pulls/(\d+)/files", pull_files),
    ("PUT", r"/pulls/(\d+)/merge", merge_pull),
    ("GET", r"/commits", list_commits),
    ("GET", r"/commits/([^/]+)", get_commit),
    ("GET", r"/commits/([^/]+)/check-runs", check_runs),
    ("GET", r"/commits/([^/]+)/status", combined_status),
    ("GET", r"/actions/runs", list_runs),
    ("GET", r"/actions/runs/(\d+)", get_run),
    ("POST", r"/actions/runs/(\d+)/(rerun|rerun-failed-jobs)", rerun),
    ("GET", r"/contents/(.+)", get_contents),
    ("GET", r"/git/ref/heads/(.+)", get_ref),
    ("POST", r"/git/refs", create_ref),
    ("GET", r"/git/commits/([0-9a-f]{40})", get_git_commit),
    ("POST", r"/git/commits", create_git_commit),
    ("GET", r"/git/trees/([^/]+)", get_tree),
    ("POST", r"/git/trees", create_tree),
    ("POST", r"/issues", create_issue),
]


@pytest.fixture
def github_api():
    """A fresh emulator per test (state is cheap to seed; the server starts in milliseconds)."""
    with GitHubEmulator() as emulator:
        yield emulator
