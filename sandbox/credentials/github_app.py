"""GitHub App installation tokens, minted per action with only the permissions it needs.

A GitHub App authenticates as itself with a short JWT signed by its private key (RS256,
``iss`` = the App id, at most 10 minutes), then asks for an installation token limited to
named repositories and permissions (``POST /app/installations/{id}/access_tokens``). The token
lives at most an hour; opsbot revokes it (``DELETE /installation/token``) when the action ends.
The private key stays on the host, like the broker's Vault token: only the installation token
reaches the sandbox. Which permissions an action needs is data beside the action
(``tools.github.PERMISSIONS``).

Blocking (requests), so callers run these in a worker thread::

    token = mint(app, "acme/api", {"contents": "write", "pull_requests": "write"})
    try:
        ...  # the action, with token.value
    finally:
        revoke(app, token)

:class:`GitHubAppToken` is the broker's credential kind ``github_app`` doing exactly that for
each action whose GitHub connector runs as the App (``GitHubConfig.app``). Revoking needs the
token itself, which a grant never holds: the kind keeps live tokens in memory until their
action ends. After a crash they cannot be revoked and die at GitHub's one hour.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import jwt
import requests
from pydantic import BaseModel, ConfigDict, SecretStr

from sandbox.credentials.kinds import Grant, IssueContext, Need
from sandbox.credentials.vault import NOT_RUN, Vault, VaultError
from tools.base import SecretKind, SecretRef

JWT_LIFETIME_S = 540  # GitHub accepts at most 10 minutes; leave room for clock skew
CLOCK_SKEW_S = 60


class GitHubAppError(RuntimeError):
    """The token could not be minted; ``str(e)`` is the sentence users read."""


class GitHubApp(BaseModel):
    """The App opsbot acts as: its id, its installation on the organisation, its private key."""

    model_config = ConfigDict(frozen=True)

    api_url: str = "https://api.github.com"
    app_id: int
    installation_id: int
    private_key: SecretStr  # PEM


@dataclass
class InstallationToken:
    value: str = field(repr=False)
    expires_at: str
    repositories: tuple[str, ...]
    permissions: dict[str, str]

    def audit(self) -> dict[str, object]:
        """For the audit row: what the token may do, never the token."""
        return {"kind": "github_app", "expires_at": self.expires_at,
                "repositories": list(self.repositories), "permissions": self.permissions}


def app_jwt(app: GitHubApp, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time()) - CLOCK_SKEW_S
    claims = {"iat": issued, "exp": issued + JWT_LIFETIME_S, "iss": str(app.app_id)}
    return jwt.encode(claims, app.private_key.get_secret_value(), algorithm="RS256")


def mint(app: GitHubApp, repo: str, permissions: dict[str, str]) -> InstallationToken:
    """An installation token for ``repo`` (owner/name) with exactly ``permissions``."""
    name = repo.split("/", 1)[1]
    reply = _post(app, f"/app/installations/{app.installation_id}/access_tokens",
                  {"repositories": [name], "permissions": permissions})
    body = reply.json()
    if reply.status_code != 201:
        raise GitHubAppError(f"GitHub refused an installation token for {repo} "
                             f"({reply.status_code}: {body.get('message', 'no message')}); "
                             "the action did not run.")
    granted = body.get("permissions") or {}
    if granted != permissions:
        raise GitHubAppError(f"GitHub granted {granted} instead of {permissions} for {repo}; "
                             "the action did not run.")
    repos = tuple(r["full_name"] for r in body.get("repositories") or [])
    return InstallationToken(body["token"], body["expires_at"], repos, granted)


def revoke(app: GitHubApp, token: InstallationToken) -> str | None:
    """Revoke the token; a problem is returned as a sentence (the token still expires)."""
    try:
        reply = requests.delete(_url(app, "/installation/token"), timeout=10,
                                headers={"Authorization": f"token {token.value}",
                                         "Accept": "application/vnd.github+json"})
    except requests.RequestException as e:
        return f"could not reach GitHub to revoke the token ({type(e).__name__})"
    if reply.status_code not in (204, 401):  # 401: already revoked or expired
        return f"GitHub answered {reply.status_code} when revoking the token"
    return None


def _post(app: GitHubApp, path: str, body: dict[str, object]) -> requests.Response:
    headers = {"Authorization": f"Bearer {app_jwt(app)}", "Accept": "application/vnd.github+json"}
    try:
        return requests.post(_url(app, path), json=body, headers=headers, timeout=10)
    except requests.RequestException as e:
        raise GitHubAppError(f"Cannot reach the GitHub API at {app.api_url} to mint a token "
                             f"({type(e).__name__}); the action did not run.") from None


def _url(app: GitHubApp, path: str) -> str:
    parts = urlsplit(app.api_url)
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}{path}"


REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}")
PERMISSION = re.compile(r"([a-z_]{1,64})=(read|write)")


def parse_permissions(text: str) -> dict[str, str]:
    """``contents=write,issues=read`` → ``{"contents": "write", "issues": "read"}``."""
    pairs = [PERMISSION.fullmatch(item) for item in text.split(",") if item]
    if not pairs or not all(pairs):
        raise ValueError(f"`{text}` is not a list of permission=read|write")
    return {m.group(1): m.group(2) for m in pairs if m}


class GitHubAppToken:
    """The broker's kind ``github_app``: ref path = the repository, ``params: permissions``."""

    kind = SecretKind.GITHUB_APP
    uses_vault, leased, dynamic, blocking = False, False, True, True
    public: frozenset[str] = frozenset()

    def __init__(self, app: GitHubApp) -> None:
        self.app = app
        self._live: dict[str, InstallationToken] = {}
        self._lock = threading.Lock()

    def validate(self, ref: SecretRef) -> None:
        if not REPO.fullmatch(ref.path) or ref.key != "token":
            raise VaultError(f"a GitHub App token is for one repository (owner/name), not "
                             f"`{ref.path}`; {NOT_RUN}")
        try:
            parse_permissions(dict(ref.params).get("permissions", ""))
        except ValueError as e:
            raise VaultError(f"the GitHub App token for {ref.path} names no valid permissions "
                             f"({e}); {NOT_RUN}") from None

    def policy(self, need: Need) -> str:
        return ""

    def issue(self, ctx: IssueContext, need: Need) -> tuple[dict[str, str], Grant]:
        try:
            token = mint(self.app, need.path, parse_permissions(need.param("permissions") or ""))
        except GitHubAppError as e:
            raise VaultError(str(e)) from None
        grant_id = f"gh-{secrets.token_hex(8)}"
        with self._lock:
            self._live[grant_id] = token
        grant = Grant(kind=self.kind, path=need.path, lease_id=grant_id, ttl_s=3600,
                      facts={key: value for key, value in token.audit().items() if key != "kind"})
        return {name: token.value for name in need.keys}, grant

    def revoke(self, vault: Vault | None, grant: Grant) -> None:
        with self._lock:
            token = self._live.pop(grant.lease_id or "", None)
        if token is None:
            raise VaultError(f"GitHub App token {grant.lease_id} was minted by an opsbot that is "
                             f"gone; it expires at {grant.facts.get('expires_at')}.")
        problem = revoke(self.app, token)
        if problem:
            with self._lock:
                self._live[grant.lease_id or ""] = token  # a later revoke may retry
            raise VaultError(f"{problem}; it expires at {token.expires_at}.")
