"""Credentials an action gets for its run alone, like its container and its egress.

The broker lives on the host, beside the sandbox runner: it holds opsbot's own Vault token,
which must never ship into the sandbox image (``tools/`` does). For each action it mints what
the action declared (``tools.base.SecretRef``), hands the values to the runner for the
container's stdin, and revokes them when the action ends. See :mod:`sandbox.credentials.broker`.
"""

from sandbox.credentials.broker import (
    PARENT_POLICY,
    CredentialBroker,
    Lease,
    VaultConfig,
    VaultError,
    policy_hcl,
)

__all__ = ["PARENT_POLICY", "CredentialBroker", "Lease", "VaultConfig", "VaultError", "policy_hcl"]
