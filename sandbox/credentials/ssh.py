"""SSH certificates: a key pair made for the action, its public half signed by the Vault SSH engine.

The key pair is generated here, in memory; the private key goes to the action on stdin and
nowhere else. ``<mount>/sign/<role>`` (written with the action's child token) returns a user
certificate for one principal (``params: principal``, e.g. the tier's principal) valid for
the action's TTL. SSH certificates cannot be revoked through Vault: what ends this credential
is that nobody keeps the private key (the container is destroyed, the broker drops it) and
that the certificate expires at the TTL.
"""

from __future__ import annotations

import re
from datetime import timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox.credentials.kinds import Grant, IssueContext, Need, check_role, now, stanza
from sandbox.credentials.vault import NOT_RUN, Vault, VaultError
from tools.base import SecretKind, SecretRef

KEYS = ("private_key", "certificate")
PRINCIPAL = re.compile(r"[a-z_][a-z0-9_.-]{0,63}")


class SSH:
    kind = SecretKind.SSH
    uses_vault, leased, dynamic = True, False, True
    public = frozenset({"certificate"})

    def validate(self, ref: SecretRef) -> None:
        check_role(ref, "sign", "an SSH", KEYS)
        principal = dict(ref.params).get("principal", "")
        if not PRINCIPAL.fullmatch(principal):
            raise VaultError(f"the SSH credential for {ref.path} names no valid principal "
                             f"(got `{principal}`); {NOT_RUN}")

    def policy(self, need: Need) -> str:
        return stanza(need.path, "update")

    def issue(self, ctx: IssueContext, need: Need) -> tuple[dict[str, str], Grant]:
        assert ctx.vault is not None and ctx.client is not None
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
        principal = need.param("principal") or ""
        with ctx.vault.translate(f"sign an SSH certificate with {need.path}", denied=need.path):
            body = ctx.client.write_data(need.path, data={
                "public_key": public, "cert_type": "user", "valid_principals": principal,
                "ttl": f"{ctx.ttl_s}s"})
        data = (body or {}).get("data") or {}
        if not data.get("signed_key"):
            raise VaultError(f"Vault at {ctx.vault.addr} returned no certificate from "
                             f"{need.path}: is it an SSH engine role? {NOT_RUN}")
        document = {"private_key": _private(key), "certificate": data["signed_key"].strip()}
        grant = Grant(kind=self.kind, path=need.path, ttl_s=ctx.ttl_s, revocable=False,
                      facts={"principal": principal, "serial": str(data.get("serial_number")),
                             "valid_until": _until(ctx.ttl_s)})
        return {name: document[k] for name, k in need.keys.items()}, grant

    def revoke(self, vault: Vault | None, grant: Grant) -> None:
        return None  # not revocable in Vault: the key is gone with the action, the cert expires


def _private(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()


def _until(ttl_s: int) -> str:
    return (now() + timedelta(seconds=ttl_s)).isoformat()
