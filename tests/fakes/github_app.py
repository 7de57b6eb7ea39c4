"""GitHub Apps in the GitHub emulator: the App JWT, installation tokens and their permissions.

``POST /app/installations/{id}/access_tokens`` checks the App's JWT (RS256 with the App's
registered public key, ``iss`` = App id, at most 10 minutes) and mints a ``ghs_`` token limited
to the requested repositories of the installation's owner and the requested permissions, no
more than the installation has. Each request made with such a token is checked: the repository
must be one of the token's, and the route's permission (``PERMISSIONS`` below, GitHub's names)
must be granted at the level the method needs. ``DELETE /installation/token`` revokes it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from tests.fakes.github_repo import ApiError

LEVELS = {"read": 1, "write": 2}


@dataclass
class Grant:
    repositories: set[str]
    permissions: dict[str, str]
    used: list[str] = field(default_factory=list)

    def check(self, method: str, route: Any) -> None:
        permission = PERMISSIONS.get(route.__name__, "contents")
        level = "read" if method == "GET" else "write"
        held = self.permissions.get(permission)
        self.used.append(f"{permission}:{level}")
        if held is None or LEVELS[held] < LEVELS[level]:
            raise ApiError(403, "Resource not accessible by integration")


@dataclass
class Installation:
    app_id: int
    owner: str
    permissions: dict[str, str]


class AppRegistry:
    def __init__(self) -> None:
        self.public_keys: dict[int, str] = {}
        self.installations: dict[int, Installation] = {}
        self.tokens: dict[str, Grant] = {}
        self.minted: list[dict[str, Any]] = []
        self.revoked: list[str] = []

    def install(self, app_id: int, public_key_pem: str, installation_id: int, owner: str,
                permissions: dict[str, str]) -> None:
        self.public_keys[app_id] = public_key_pem
        self.installations[installation_id] = Installation(app_id, owner, permissions)

    def grant(self, token: str) -> Grant | None:
        return self.tokens.get(token)

    def handle(self, method: str, path: str, header: str, body: Any, emulator: Any
               ) -> tuple[int, Any]:
        try:
            if method == "DELETE" and path == "/installation/token":
                return self._revoke(header)
            parts = path.strip("/").split("/")
            if method == "POST" and parts[:2] == ["app", "installations"] and len(parts) == 4:
                return self._mint(int(parts[2]), header, body or {}, emulator)
            raise ApiError(404, "Not Found")
        except ApiError as e:
            return e.status, e.body

    def _mint(self, installation_id: int, header: str, body: dict[str, Any], emulator: Any
              ) -> tuple[int, Any]:
        installation = self.installations.get(installation_id)
        if installation is None:
            raise ApiError(404, "Not Found")
        self._verify_jwt(header, installation.app_id)
        repos = {f"{installation.owner}/{name}" for name in body.get("repositories", [])}
        if any(r.lower() not in emulator.repos for r in repos):
            raise ApiError(422, "There is at least one repository that does not exist")
        wanted = body.get("permissions") or installation.permissions
        for name, level in wanted.items():
            held = installation.permissions.get(name)
            if held is None or LEVELS[held] < LEVELS[level]:
                raise ApiError(422, f"The permissions requested are not granted to this "
                                    f"installation ({name}:{level}).")
        token = "ghs_" + secrets.token_hex(18)
        self.tokens[token] = Grant(repos, dict(wanted))
        expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.minted.append({"installation": installation_id, "repositories": sorted(repos),
                            "permissions": dict(wanted)})
        return 201, {"token": token, "expires_at": expires, "permissions": dict(wanted),
                     "repository_selection": "selected",
                     "repositories": [{"full_name": r, "name": r.split("/")[1]}
                                      for r in sorted(repos)]}

    def _verify_jwt(self, header: str, app_id: int) -> None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise ApiError(401, "A JSON web token could not be decoded")
        try:
            claims = jwt.decode(token, self.public_keys[app_id], algorithms=["RS256"],
                                options={"require": ["iat", "exp", "iss"]})
        except jwt.PyJWTError as e:
            raise ApiError(401, f"A JSON web token could not be decoded ({type(e).__name__})")
        if str(claims["iss"]) != str(app_id) or claims["exp"] - claims["iat"] > 660:
            raise ApiError(401, "'Expiration time' claim ('exp') is too far in the future")
        if claims["exp"] < time.time():
            raise ApiError(401, "'Expiration time' claim ('exp') must be a numeric value "
                                "representing the future time at which the assertion expires")

    def _revoke(self, header: str) -> tuple[int, Any]:
        token = header.partition(" ")[2]
        if self.tokens.pop(token, None) is None:
            raise ApiError(401, "Bad credentials")
        self.revoked.append(token)
        return 204, None


# Route function (tests/fakes/github.py) -> the GitHub App permission it needs.
PERMISSIONS = {
    "list_pulls": "pull_requests", "get_pull": "pull_requests", "pull_commits": "pull_requests",
    "create_pull": "pull_requests", "pull_files": "pull_requests", "merge_pull": "contents",
    "check_runs": "checks", "combined_status": "statuses", "list_runs": "actions",
    "get_run": "actions", "rerun": "actions", "create_issue": "issues",
    "create_comment": "issues", "required_status_checks": "administration",
}
