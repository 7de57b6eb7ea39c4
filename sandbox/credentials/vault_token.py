"""Vault tokens that see metadata and nothing else, one per action of the Vault connector.

A ref of kind ``vault`` lists the ``path=capabilities`` its action needs (``params: scopes``,
from ``tools.vault.scopes``). Issuing writes a throwaway policy granting exactly those and mints
a token with that policy alone (no default policy, not renewable, TTL = the action's, one use
per path), with opsbot's own token; revoking revokes the token by accessor and deletes the
policy. Every path must have one of the metadata shapes in :data:`SHAPES`: a KV v2
``<mount>/metadata/...`` path, the token and lease lookups, one lease's revocation. Anything
else — a ``<mount>/data/...`` path, a glob, ``sys/...`` beyond those — is refused before Vault
is asked, so no bug in a connector can mint a token that reads a secret's value.
"""

from __future__ import annotations

import re

import hvac.exceptions

from sandbox.credentials.kinds import Grant, IssueContext, Need, policy_name, stanza
from sandbox.credentials.vault import NOT_RUN, Vault, VaultError
from tools.base import SecretKind, SecretRef

_SEGMENT = r"[A-Za-z0-9_.-]+"
_PLAIN = rf"{_SEGMENT}(?:/{_SEGMENT})*"
_MOUNT = r"(?!(?:sys|auth|identity|cubbyhole)/)[A-Za-z0-9_-]+"
SHAPES: tuple[tuple[re.Pattern[str], frozenset[str]], ...] = (
    (re.compile(rf"{_MOUNT}/metadata(?:/{_PLAIN})?"), frozenset({"read", "list"})),
    (re.compile(r"auth/token/lookup-accessor"), frozenset({"update"})),
    (re.compile(r"sys/leases/lookup"), frozenset({"update"})),
    (re.compile(rf"sys/leases/lookup/{_PLAIN}"), frozenset({"list", "sudo"})),
    (re.compile(rf"sys/leases/revoke/{_PLAIN}"), frozenset({"update"})),
)


def parse_scopes(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """``a/b=read;c=list,sudo`` → ``[("a/b", ("read",)), ("c", ("list", "sudo"))]``."""
    scopes = []
    for item in (s for s in text.split(";") if s):
        path, _, caps = item.partition("=")
        scopes.append((path, tuple(c for c in caps.split(",") if c)))
    return scopes


def allowed(path: str, capabilities: tuple[str, ...]) -> bool:
    if ".." in path.split("/") or "." in path.split("/"):
        return False
    return any(shape.fullmatch(path) and capabilities and set(capabilities) <= caps
               for shape, caps in SHAPES)


class VaultToken:
    kind = SecretKind.VAULT
    uses_vault, leased, dynamic, blocking = False, False, True, True
    public: frozenset[str] = frozenset()

    def validate(self, ref: SecretRef) -> None:
        scopes = parse_scopes(dict(ref.params).get("scopes", ""))
        if not scopes or ref.key != "token":
            raise VaultError(f"the Vault token for `{ref.name}` allows nothing; {NOT_RUN}")
        for path, caps in scopes:
            if not allowed(path, caps):
                raise VaultError(f"`{path}` ({', '.join(caps) or 'no capability'}) is not a "
                                 f"metadata path opsbot mints tokens for; {NOT_RUN}")

    def policy(self, need: Need) -> str:
        return ""  # not issued with the action's child token: this kind writes its own policy

    def issue(self, ctx: IssueContext, need: Need) -> tuple[dict[str, str], Grant]:
        vault = _vault(ctx.vault)
        scopes = parse_scopes(need.param("scopes") or "")
        name = policy_name(ctx.run_id, ctx.call_id)
        parent = vault.parent()
        with vault.translate("write the action's Vault policy"):
            parent.sys.create_or_update_acl_policy(name, "".join(stanza(p, *c) for p, c in scopes))
        try:
            with vault.translate("mint the action's Vault token"):
                auth = parent.auth.token.create(
                    policies=[name], ttl=f"{ctx.ttl_s}s", explicit_max_ttl=f"{ctx.ttl_s}s",
                    num_uses=len(scopes), no_default_policy=True, renewable=False,
                    type="service", display_name="opsbot-vault-metadata",
                    meta={"run_id": ctx.run_id, "call_id": ctx.call_id})["auth"]
        except VaultError:
            _delete_policy(vault, name)
            raise
        grant = Grant(kind=self.kind, path=need.path, lease_id=auth["accessor"], ttl_s=ctx.ttl_s,
                      facts={"policy": name, "scopes": [f"{p}={','.join(c)}" for p, c in scopes]})
        return {ref: auth["client_token"] for ref in need.keys}, grant

    def revoke(self, vault: Vault | None, grant: Grant) -> None:
        vault = _vault(vault)
        tail = f"token {grant.lease_id} still expires at its TTL."
        try:
            with vault.translate("revoke the action's Vault token", tail=tail):
                vault.parent().auth.token.revoke_accessor(grant.lease_id)
        except VaultError:
            if not _gone(vault, grant.lease_id or ""):
                raise
        _delete_policy(vault, str(grant.facts.get("policy", "")))


def _vault(vault: Vault | None) -> Vault:
    if vault is None:
        raise VaultError("the Vault connector's token is minted by opsbot's Vault, but "
                         f"VAULT_ADDR and VAULT_TOKEN are not set; {NOT_RUN}")
    return vault


def _gone(vault: Vault, accessor: str) -> bool:
    """True when Vault no longer knows the accessor (expired, or revoked already)."""
    try:
        vault.parent().auth.token.lookup_accessor(accessor)
    except hvac.exceptions.InvalidRequest:
        return True
    except Exception:  # noqa: BLE001 - unknown: report the revoke problem as it was
        return False
    return False


def _delete_policy(vault: Vault, name: str) -> None:
    if name:
        with vault.translate("delete the action's Vault policy",
                             tail="the policy stays until someone deletes it."):
            vault.parent().sys.delete_acl_policy(name)
