"""Tokens for opsbot's Docker API proxy: the only way a Docker action reaches the engine.

A ref of kind ``docker`` carries the action's declared requests (``params: allow``, rules like
``GET /containers/{id}/logs?tail``) and its target's container ids (``params: containers``).
Issuing registers a grant with the proxy under a fresh random token (the action gets the token
on stdin, the proxy keeps only its hash) valid for the action's TTL; revoking removes it, so
the token is worthless the moment the action ends. No Vault involved.
"""

from __future__ import annotations

import secrets

from sandbox.credentials.kinds import Grant, IssueContext, Need
from sandbox.credentials.vault import NOT_RUN, Vault, VaultError
from sandbox.docker_proxy import DockerProxy, Rule
from tools.base import SecretKind, SecretRef


class DockerToken:
    kind = SecretKind.DOCKER
    uses_vault, leased, dynamic = False, False, True
    public: frozenset[str] = frozenset()

    def __init__(self, proxy: DockerProxy) -> None:
        self.proxy = proxy

    def validate(self, ref: SecretRef) -> None:
        params = dict(ref.params)
        try:
            rules = [Rule.parse(r) for r in params.get("allow", "").split(";") if r]
        except ValueError as e:
            raise VaultError(f"the Docker grant for `{ref.name}` is malformed ({e}); "
                             f"{NOT_RUN}") from None
        if not rules or ref.key != "token":
            raise VaultError(f"the Docker grant for `{ref.name}` allows nothing; {NOT_RUN}")

    def policy(self, need: Need) -> str:
        return ""

    def issue(self, ctx: IssueContext, need: Need) -> tuple[dict[str, str], Grant]:
        token = secrets.token_urlsafe(32)
        rules = [r for r in (need.param("allow") or "").split(";") if r]
        containers = [c for c in (need.param("containers") or "").split(",") if c]
        grant_id = self.proxy.grant(token, rules, containers, ctx.ttl_s)
        grant = Grant(kind=self.kind, path=need.path, lease_id=grant_id, ttl_s=ctx.ttl_s,
                      facts={"rules": rules, "containers": containers})
        return {name: token for name in need.keys}, grant

    def revoke(self, vault: Vault | None, grant: Grant) -> None:
        if grant.lease_id:
            self.proxy.revoke(grant.lease_id)
