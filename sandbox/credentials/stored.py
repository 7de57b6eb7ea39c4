"""Stored secrets: opsbot's own settings (static) and KV v2 secrets read for the action.

Both hand the action a long-lived value: revoking the lease ends the token that read a KV
secret, not the secret itself. Dynamic kinds (:mod:`.database`, :mod:`.ssh`) do better where
the service supports them; these stay as the fallback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import hvac
from pydantic import SecretStr

from sandbox.credentials.kinds import Grant, IssueContext, Need, stanza
from sandbox.credentials.vault import NOT_RUN, Vault, VaultError
from tools.base import STATIC, SecretKind, SecretRef

# Plain path segments only: `*` and `+` are policy globs and would widen the grant.
_PATH = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+")


def plain_path(path: str) -> bool:
    return bool(_PATH.fullmatch(path)) and ".." not in path.split("/")


class Static:
    """``static:NAME``: a value from opsbot's settings (GITHUB_TOKEN); no Vault call."""

    kind = SecretKind.STATIC
    uses_vault, leased, dynamic = False, False, False
    public: frozenset[str] = frozenset()

    def __init__(self, values: Mapping[str, SecretStr]) -> None:
        self._values = dict(values)

    def validate(self, ref: SecretRef) -> None:
        if not setting(ref.path):
            raise VaultError(f"secret `{ref.name}` names no static setting (`static:` needs a "
                             "name).")

    def policy(self, need: Need) -> str:
        return ""

    def issue(self, ctx: IssueContext, need: Need) -> tuple[dict[str, str], Grant]:
        name = setting(need.path)
        value = self._values.get(name)
        if value is None:
            raise VaultError(f"the static secret {name} is not set in opsbot's settings; {NOT_RUN}")
        grant = Grant(kind=self.kind, path=need.path, revocable=False, facts={"setting": name})
        return {ref: value.get_secret_value() for ref in need.keys}, grant

    def revoke(self, vault: Vault | None, grant: Grant) -> None:
        return None


def setting(path: str) -> str:
    return path.removeprefix(STATIC).strip()


class KV:
    """A KV v2 secret (``kv/data/<path>#<key>``), read with the action's child token."""

    kind = SecretKind.KV
    uses_vault, leased, dynamic = True, False, False
    public: frozenset[str] = frozenset()

    def validate(self, ref: SecretRef) -> None:
        if not plain_path(ref.path):
            raise VaultError(
                f"secret path `{ref.path}` is not a plain KV v2 API path like kv/data/redis/prod "
                f"(no wildcards, no leading slash); {NOT_RUN}"
            )
        if not ref.key:
            raise VaultError(f"secret {ref.path} is declared without a key; {NOT_RUN}")

    def policy(self, need: Need) -> str:
        return stanza(need.path, "read")

    def issue(self, ctx: IssueContext, need: Need) -> tuple[dict[str, str], Grant]:
        document = read_kv(ctx, need.path)
        values = {}
        for name, key in need.keys.items():
            if key not in document:
                raise VaultError(f"secret {need.path} has no key `{key}`; {NOT_RUN}")
            values[name] = str(document[key])
        return values, Grant(kind=self.kind, path=need.path, revocable=False)

    def revoke(self, vault: Vault | None, grant: Grant) -> None:
        return None  # the value lives on; the token that read it is revoked by the broker


def read_kv(ctx: IssueContext, path: str) -> dict[str, Any]:
    assert ctx.vault is not None and ctx.client is not None
    client: hvac.Client = ctx.client
    with ctx.vault.translate(f"read secret {path}", denied=path):
        body = client.read(path)
    if body is None:
        raise VaultError(f"secret {path} does not exist in Vault at {ctx.vault.addr}; {NOT_RUN}")
    data = (body.get("data") or {}).get("data")
    if not isinstance(data, dict):
        raise VaultError(f"secret {path} is not a KV v2 secret (kv/data/<path>); {NOT_RUN}")
    return data
