"""Dynamic database users: the Vault database engine creates one per action and drops it.

``database/creds/<role>`` (read with the action's child token) makes Vault run the role's
creation statements on the database (a Redis ACL user, a PostgreSQL role) and lease the
username and password to that token. The broker revokes the lease when the action ends
(``sys/leases/revoke/<lease id>``, synchronous: the user is gone when it returns); if opsbot dies
first, the next start revokes it from the audit log, and at the latest Vault revokes it when the
child token expires (TTL = the action's timeout plus a margin), whatever the role's own TTL.
"""

from __future__ import annotations

from sandbox.credentials.kinds import Grant, IssueContext, Need, check_role, stanza
from sandbox.credentials.vault import NOT_RUN, Vault, VaultError
from tools.base import SecretKind, SecretRef

KEYS = ("username", "password")


class Database:
    kind = SecretKind.DATABASE
    uses_vault, leased, dynamic = True, True, True
    public = frozenset({"username"})

    def validate(self, ref: SecretRef) -> None:
        check_role(ref, "creds", "a database", KEYS)

    def policy(self, need: Need) -> str:
        return stanza(need.path, "read")

    def issue(self, ctx: IssueContext, need: Need) -> tuple[dict[str, str], Grant]:
        assert ctx.vault is not None and ctx.client is not None
        with ctx.vault.translate(f"create a database user from {need.path}", denied=need.path):
            body = ctx.client.read(need.path)
        data = (body or {}).get("data") or {}
        if not body or not body.get("lease_id") or not all(data.get(k) for k in KEYS):
            raise VaultError(f"Vault at {ctx.vault.addr} returned no leased username and password "
                             f"for {need.path}: is it a database secrets engine role? {NOT_RUN}")
        # The token's TTL caps the role's: Vault revokes a token's leases with it.
        ttl = min(int(body.get("lease_duration") or ctx.ttl_s), ctx.ttl_s)
        grant = Grant(kind=self.kind, path=need.path, lease_id=body["lease_id"], ttl_s=ttl,
                      facts={"role": need.path.rsplit("/", 1)[-1], "username": data["username"]})
        return {name: str(data[key]) for name, key in need.keys.items()}, grant

    def revoke(self, vault: Vault | None, grant: Grant) -> None:
        assert vault is not None and grant.lease_id
        with vault.translate(f"revoke lease {grant.lease_id}",
                             tail=f"user {grant.facts.get('username')} lives until its TTL."):
            vault.parent().adapter.put(f"/v1/sys/leases/revoke/{grant.lease_id}")
