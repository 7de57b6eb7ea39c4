"""Credentials an action gets for its run alone, like its container and its egress.

The broker lives on the host, beside the sandbox runner: it holds opsbot's own Vault token,
which must never ship into the sandbox image (``tools/`` does). For each action it issues what
the action declared (``tools.base.SecretRef``), hands the values to the runner for the
container's stdin, and revokes them when the action ends.

| module | what it holds |
|---|---|
| ``broker`` | ``CredentialBroker``, ``Lease``: plan, policy + child token, revoke, orphans |
| ``kinds`` | the interface of a credential kind (``Kind``, ``Need``, ``Grant``) |
| ``stored`` | static settings and KV v2 secrets (long-lived values) |
| ``database`` | dynamic database users (Vault database engine: Redis ACL users, PostgreSQL roles) |
| ``ssh`` | SSH certificates signed for one action (Vault SSH engine) |
| ``aws`` | AWS STS sessions (AssumeRole with the action's session policy) |
| ``vault_token`` | Vault tokens limited to metadata paths (the Vault connector's actions) |
| ``vault`` | ``VaultConfig``, clients, every Vault failure as a sentence (``VaultError``) |
"""

from sandbox.credentials.broker import PARENT_POLICY, CredentialBroker, Lease, policy_hcl
from sandbox.credentials.kinds import Grant, Kind, Need
from sandbox.credentials.vault import VaultConfig, VaultError

__all__ = ["PARENT_POLICY", "CredentialBroker", "Grant", "Kind", "Lease", "Need", "VaultConfig",
           "VaultError", "policy_hcl"]
