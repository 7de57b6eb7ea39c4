"""A GitHub REST API emulator: a real HTTP server on loopback that PyGithub talks to.

It speaks the REST shapes opsbot's GitHub connector needs: repositories, pull requests (+ files,
commits, merge), commits (+ check runs, combined status), Actions runs (+ re-run), contents,
issues, and the git data API (refs, commits, trees) used to build a revert. Requests need
``Authorization: token <t>`` or ``Bearer <t>`` (401 otherwise); unknown things are 404s with
GitHub's body; lists paginate with ``per_page``/``page`` and a ``Link`` header. Every request is
recorded (``requests``); ``all_text()`` joins them for canary checks. Repository state lives in
:class:`~tests.fakes.github_repo.FakeRepo`.

Usage::

    with GitHubEmulator(token="ghp_x") as gh:
        repo = gh.add_repo("acme/api", files={"app.py": "print(1)\\n"})
        Github(base_url=gh.url, auth=Auth.Token("ghp_x")).get_repo("acme/api").default_branch
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from tests.fakes import github_json as shape
from tests.fakes.github_app import AppRegistry, Grant
from tests.fakes.github_repo import ApiError, FakeRepo, apply

Reply = tuple[int, Any]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: str


class Page(list):
    """A list reply to paginate; ``key`` wraps it like the Actions and Checks APIs do."""

    def __init__(self, items: list[Any], key: str | None = None):
        super().__init__(items)
        self.key = key


class GitHubEmulator:
    """The HTTP server plus the state of every seeded repository."""

    def __init__(self, token: str = "ghp_emulator_token", host: str = "127.0.0.1"):
        self.tokens = {token}
        self.host = host  # the name in the URLs it answers with (GitHub Enterprise: its host name)
        self.apps = AppRegistry()
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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
        """Recorded requests with this method whose path fully matches the regex."""
        return [
            r for r in self.requests if r.method == method and re.fullmatch(path_pattern, r.path)
        ]

    def handle(self, method: str, path: str, query: dict[str, str], body: Any,
               grant: Grant | None = None) -> Reply:
        match = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)?", path)
        repo = self.repos.get(f"{match[1]}/{match[2]}".lower()) if match else None
        if repo is None or (grant and repo.full_name not in grant.repositories):
            raise ApiError(404, "Not Found")
        for verb, pattern, route in ROUTES:
            found = re.fullmatch(pattern, match[3] or "")
            if verb == method and found:
                if grant:
                    grant.check(method, route)
                with self._lock:
                    return route(repo, query, body or {}, *map(unquote, found.groups()))
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
            record = Recorded(self.command, parts.path, query, dict(self.headers), raw)
            emulator.requests.append(record)
            link = None
            try:
                body = json.loads(raw or "null")
                header = self.headers.get("Authorization") or ""
                if parts.path.startswith(("/app/", "/installation/")):
                    status, payload = emulator.apps.handle(self.command, parts.path, header,
                                                           body, emulator)
                    self._send(status, payload, None)
                    return
                grant = emulator.apps.grant(header.partition(" ")[2])
                if grant is None:
                    self._authorize()
                status, payload = emulator.handle(self.command, parts.path, query, body, grant)
                payload, link = _paginate(payload, query, emulator.url + parts.path)
            except ApiError as e:
                status, payload = e.status, e.body
            self._send(status, payload, link)

        def _authorize(self) -> None:
            scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
            if not token:
                raise ApiError(401, "Requires authentication")
            if scheme.lower() not in ("token", "bearer") or token not in emulator.tokens:
                raise ApiError(401, "Bad credentials")

        def _send(self, status: int, payload: Any, link: str | None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            if link:
                self.send_header("Link", link)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler


def _paginate(payload: Any, query: dict[str, str], url: str) -> tuple[Any, str | None]:
    if not isinstance(payload, Page):
        return payload, None
    per_page, page = int(query.get("per_page", 30)), int(query.get("page", 1))
    items = payload[(page - 1) * per_page : page * per_page]
    link = None
    if page * per_page < len(payload):
        rest = "&".join(f"{k}={v}" for k, v in query.items() if k != "page")
        link = f'<{url}?{rest}&page={page + 1}>; rel="next"'
    body = {"total_count": len(payload), payload.key: items} if payload.key else list(items)
    return body, link


def _found(table: dict[int, Any], key: str) -> Any:
    if int(key) not in table:
        raise ApiError(404, "Not Found")
    return table[int(key)]


def _invalid(resource: str, field: str, code: str = "invalid") -> ApiError:
    errors = [{"resource": resource, "field": field, "code": code}]
    return ApiError(422, "Validation Failed", errors=errors)


# --- pulls ----------------------------------------------------------------------------------
def list_pulls(repo: FakeRepo, q, body) -> Reply:
    state, base, head = q.get("state", "open"), q.get("base"), q.get("head")
    pulls = [p for p in repo.pulls.values() if state in ("all", p["state"])]
    pulls = [p for p in pulls if base in (None, p["base"])]
    if head is not None:  # "owner:branch", as GitHub takes it
        owner, _, branch = head.partition(":")
        pulls = [p for p in pulls if owner == repo.owner and p["head"] == branch]
    pulls.sort(key=lambda p: p["number"], reverse=q.get("direction", "desc") == "desc")
    return 200, Page([shape.pull(repo, p) for p in pulls])


def get_pull(repo: FakeRepo, q, body, number) -> Reply:
    return 200, shape.pull(repo, _found(repo.pulls, number))


def pull_commits(repo: FakeRepo, q, body, number) -> Reply:
    shas = repo.pull_commits(_found(repo.pulls, number))
    return 200, Page([shape.commit(repo, sha) for sha in shas])


def create_pull(repo: FakeRepo, q, body) -> Reply:
    for key in ("head", "base"):
        if body.get(key) not in repo.branches:
            raise _invalid("PullRequest", key)
    if not body.get("title"):
        raise _invalid("PullRequest", "title", "missing_field")
    if repo.branches[body["head"]] == repo.branches[body["base"]]:
        message = f"No commits between {body['base']} and {body['head']}"
        raise ApiError(422, "Validation Failed", errors=[{"message": message}])
    args = body["head"], body["base"], body["title"], body.get("body") or ""
    number = repo.open_pull(*args, user="opsbot", draft=bool(body.get("draft")))
    return 201, shape.pull(repo, repo.pulls[number])


def pull_files(repo: FakeRepo, q, body, number) -> Reply:
    p = _found(repo.pulls, number)
    old = repo.trees[repo.commits[p["base_sha"]]["tree"]]
    return 200, Page(shape.files_diff(repo, old, repo.files_at(repo.head_sha(p))))


def merge_pull(repo: FakeRepo, q, body, number) -> Reply:
    p = _found(repo.pulls, number)
    if p["state"] != "open" or repo.conflicts(p):
        raise ApiError(405, "Pull Request is not mergeable")
    if p["draft"]:
        raise ApiError(405, "Pull Request is still a draft")
    if body.get("sha") and body["sha"] != repo.head_sha(p):
        raise ApiError(409, "Head branch was modified. Review and try the merge again.")
    method = body.get("merge_method", "merge")
    sha = repo.merge_pull(p["number"], method, body.get("commit_title"))
    return 200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}


# --- commits, checks ---------------------------------------------------------------------------
def list_commits(repo: FakeRepo, q, body) -> Reply:
    shas = repo.ancestors(repo.resolve(q.get("sha", repo.default_branch)))
    ordered = sorted(shas, key=lambda s: repo.commits[s]["date"], reverse=True)
    return 200, Page([shape.commit(repo, s) for s in ordered])


def get_commit(repo: FakeRepo, q, body, ref) -> Reply:
    return 200, shape.commit(repo, repo.resolve(ref), with_files=True)


def combined_status(repo: FakeRepo, q, body, ref) -> Reply:
    return 200, shape.combined_status(repo, repo.resolve(ref))


def check_runs(repo: FakeRepo, q, body, ref) -> Reply:
    runs = repo.check_runs.get(repo.resolve(ref), [])
    return 200, Page([shape.check_run(repo, c) for c in runs], key="check_runs")


# --- actions --------------------------------------------------------------------------------------
def list_runs(repo: FakeRepo, q, body) -> Reply:
    runs = sorted(repo.runs.values(), key=lambda r: r["id"], reverse=True)
    runs = [r for r in runs if q.get("branch") in (None, r["head_branch"])]
    runs = [r for r in runs if q.get("status") in (None, r["status"], r["conclusion"])]
    return 200, Page([shape.workflow_run(repo, r) for r in runs], key="workflow_runs")


def get_run(repo: FakeRepo, q, body, run_id) -> Reply:
    return 200, shape.workflow_run(repo, _found(repo.runs, run_id))


def rerun(repo: FakeRepo, q, body, run_id, what) -> Reply:
    run = _found(repo.runs, run_id)
    if run["status"] != "completed":
        raise ApiError(403, "This workflow is already running")
    if what == "rerun-failed-jobs" and run["conclusion"] == "success":
        raise ApiError(403, "This workflow run cannot be rerun")
    run.update(status="queued", conclusion=None, run_attempt=run["run_attempt"] + 1)
    return 201, {}


# --- contents, git data --------------------------------------------------------------------------
def get_contents(repo: FakeRepo, q, body, path) -> Reply:
    ref = q.get("ref", repo.default_branch)
    files = repo.files_at(ref)
    if path in files:
        return 200, shape.content(repo, path, files[path], ref)
    prefix = path.rstrip("/") + "/"
    names = sorted({p[len(prefix) :].split("/")[0] for p in files if p.startswith(prefix)})
    if not names:
        raise ApiError(404, "Not Found")
    return 200, [shape.content(repo, prefix + n, files.get(prefix + n), ref) for n in names]


def get_ref(repo: FakeRepo, q, body, branch) -> Reply:
    if branch not in repo.branches:
        raise ApiError(404, "Not Found")
    return 200, shape.git_ref(repo, branch)


def create_ref(repo: FakeRepo, q, body) -> Reply:
    name = (body.get("ref") or "").removeprefix("refs/heads/")
    if name in repo.branches:
        raise ApiError(422, "Reference already exists")
    if not name or body.get("sha") not in repo.commits:
        raise ApiError(422, "Object does not exist")
    repo.branches[name] = body["sha"]
    return 201, shape.git_ref(repo, name)


def get_git_commit(repo: FakeRepo, q, body, sha) -> Reply:
    if sha not in repo.commits:
        raise ApiError(404, "Not Found")
    return 200, shape.git_commit(repo, sha)


def create_git_commit(repo: FakeRepo, q, body) -> Reply:
    parents = list(body.get("parents", []))
    if body.get("tree") not in repo.trees or any(p not in repo.commits for p in parents):
        raise ApiError(422, "Tree SHA does not exist")
    sha = repo.new_commit(body.get("message", ""), body["tree"], parents, author="opsbot")
    return 201, shape.git_commit(repo, sha)


def get_tree(repo: FakeRepo, q, body, ref) -> Reply:
    sha = ref if ref in repo.trees else repo.commits[repo.resolve(ref)]["tree"]
    return 200, shape.tree(repo, sha, q.get("recursive") not in (None, "0", "false"))


def create_tree(repo: FakeRepo, q, body) -> Reply:
    """Entries with ``sha: null`` delete a path, like GitHub's API (with ``base_tree``)."""
    files = dict(repo.trees.get(body.get("base_tree") or "", {}))
    changes = {
        e["path"]: repo.blob(e["content"]) if "content" in e else e.get("sha")
        for e in body.get("tree", [])
    }
    return 201, shape.tree(repo, repo.tree(apply(files, changes)), True)


def update_ref(repo: FakeRepo, q, body, branch) -> Reply:
    if branch not in repo.branches:
        raise ApiError(422, "Reference does not exist")
    sha = body.get("sha")
    if sha not in repo.commits:
        raise ApiError(422, "Object does not exist")
    if not body.get("force") and repo.branches[branch] not in repo.ancestors(sha):
        raise ApiError(422, "Update is not a fast forward")
    repo.branches[branch] = sha
    return 200, shape.git_ref(repo, branch)


def create_comment(repo: FakeRepo, q, body, number) -> Reply:
    if int(number) not in repo.issues and int(number) not in repo.pulls:
        raise ApiError(404, "Not Found")
    if not body.get("body"):
        raise _invalid("IssueComment", "body", "missing_field")
    comments = repo.comments.setdefault(int(number), [])
    comment = {"id": 9000 + sum(map(len, repo.comments.values())), "body": body["body"],
               "user": "opsbot", "created_at": repo.tick()}
    comments.append(comment)
    return 201, shape.comment(repo, int(number), comment)


def required_status_checks(repo: FakeRepo, q, body, branch) -> Reply:
    if branch not in repo.required_checks:
        raise ApiError(404, "Branch not protected")
    contexts = repo.required_checks[branch]
    return 200, {"strict": False, "contexts": contexts,
                 "checks": [{"context": c, "app_id": None} for c in contexts]}


def create_issue(repo: FakeRepo, q, body) -> Reply:
    if not body.get("title"):
        raise _invalid("Issue", "title", "missing_field")
    number = repo.next_number()
    repo.issues[number] = {
        "number": number, "title": body["title"], "body": body.get("body"), "state": "open",
        "labels": body.get("labels", []), "user": "opsbot", "created_at": repo.tick(),
    }  # fmt: skip
    return 201, shape.issue(repo, repo.issues[number])


ROUTES: list[tuple[str, str, Any]] = [
    ("GET", r"", lambda repo, q, body: (200, shape.repository(repo))),
    ("GET", r"/pulls", list_pulls),
    ("POST", r"/pulls", create_pull),
    ("GET", r"/pulls/(\d+)", get_pull),
    ("GET", r"/pulls/(\d+)/files", pull_files),
    ("GET", r"/pulls/(\d+)/commits", pull_commits),
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
    ("POST", r"/issues/(\d+)/comments", create_comment),
    ("PATCH", r"/git/refs/heads/(.+)", update_ref),
    ("GET", r"/branches/([^/]+)/protection/required_status_checks", required_status_checks),
]


@pytest.fixture
def github_api():
    """A fresh emulator per test (state is cheap to seed; the server starts in milliseconds)."""
    with GitHubEmulator() as emulator:
        yield emulator
