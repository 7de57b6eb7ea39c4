"""AWS sessions per action: STS AssumeRole from a base credential kept in Vault.

A ref of kind ``aws`` names the KV v2 path of opsbot's base credential (an IAM user's
``access_key_id`` and ``secret_access_key``) and, in ``params``, the role to assume, the region,
the STS endpoint and the action's *session policy* (``tools.aws.session_policy``: its API calls
on its resources). Issuing reads the base credential with the action's child token (the
broker's policy lets that token read this one path), calls ``AssumeRole`` with that policy and
a session name naming the run and call (CloudTrail shows it), and hands the action the
temporary key, secret and session token. The base credential never leaves this process.

The session's permissions are the intersection of the role's policies and the session policy,
so it can do this action's calls on this action's resources and nothing else. It cannot be
revoked on its own: it ends at its expiry, which AWS does not allow below 15 minutes
(:data:`MIN_DURATION_S`), so the duration is the action's TTL raised to that floor.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sandbox.credentials.kinds import Grant, IssueContext, Need, stanza
from sandbox.credentials.stored import plain_path, read_kv
from sandbox.credentials.vault import NOT_RUN, Vault, VaultError
from tools.base import SecretKind, SecretRef

KEYS = ("access_key_id", "secret_access_key", "session_token")
MIN_DURATION_S, MAX_DURATION_S = 900, 3600  # AWS's floor; the default MaxSessionDuration
POLICY_MAX_CHARS = 2048  # AWS's limit on a plain-text session policy
ROLE = re.compile(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]{1,128}")
_SESSION_CHARS = re.compile(r"[^\w+=,.@-]+")


def session_name(run_id: str, call_id: str) -> str:
    return _SESSION_CHARS.sub("-", f"opsbot-{run_id}-{call_id}")[:64]


class AwsSession:
    kind = SecretKind.AWS
    uses_vault, leased, dynamic = True, False, True
    public: frozenset[str] = frozenset()

    def validate(self, ref: SecretRef) -> None:
        params = dict(ref.params)
        if not plain_path(ref.path) or ref.key not in KEYS:
            raise VaultError(f"the AWS credential `{ref.name}` must name a KV v2 path and one of "
                             f"{', '.join(KEYS)}; {NOT_RUN}")
        if not ROLE.fullmatch(params.get("role_arn", "")):
            raise VaultError(f"the AWS credential `{ref.name}` names no IAM role to assume; "
                             f"{NOT_RUN}")
        problem = _policy_problem(params.get("policy", ""))
        if problem:
            raise VaultError(f"the AWS session policy for `{ref.name}` {problem}; {NOT_RUN}")

    def policy(self, need: Need) -> str:
        return stanza(need.path, "read")  # the base credential, read by the action's token

    def issue(self, ctx: IssueContext, need: Need) -> tuple[dict[str, str], Grant]:
        base = read_kv(ctx, need.path)
        if not base.get("access_key_id") or not base.get("secret_access_key"):
            raise VaultError(f"secret {need.path} must hold access_key_id and secret_access_key; "
                             f"{NOT_RUN}")
        duration = min(max(ctx.ttl_s, MIN_DURATION_S), MAX_DURATION_S)
        name = session_name(ctx.run_id, ctx.call_id)
        body = _assume(base, need, name, duration)
        creds = body["Credentials"]
        issued = {"access_key_id": creds["AccessKeyId"],
                  "secret_access_key": creds["SecretAccessKey"],
                  "session_token": creds["SessionToken"]}
        statement = json.loads(need.param("policy") or "{}")["Statement"][0]
        grant = Grant(kind=self.kind, path=need.path, ttl_s=duration, revocable=False, facts={
            "role_arn": need.param("role_arn"), "session": name,
            "assumed_role": (body.get("AssumedRoleUser") or {}).get("Arn"),
            "expires_at": _iso(creds.get("Expiration")), "actions": statement["Action"],
            "resources": statement["Resource"]})
        return {ref: issued[key] for ref, key in need.keys.items()}, grant

    def revoke(self, vault: Vault | None, grant: Grant) -> None:
        return None  # STS sessions end at their expiry; the session policy bounds them till then


def _assume(base: dict[str, Any], need: Need, name: str, duration: int) -> dict[str, Any]:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    role, endpoint = need.param("role_arn"), need.param("sts")
    sts = boto3.session.Session(
        aws_access_key_id=base["access_key_id"], aws_secret_access_key=base["secret_access_key"],
        region_name=need.param("region")).client("sts", endpoint_url=endpoint, config=Config(
            retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=15))
    try:
        return sts.assume_role(RoleArn=role, RoleSessionName=name, DurationSeconds=duration,
                               Policy=need.param("policy"))
    except ClientError as e:
        error = e.response.get("Error") or {}
        raise VaultError(f"AWS STS refused to let opsbot assume {role} ({error.get('Code')}: "
                         f"{error.get('Message')}); {NOT_RUN}") from None
    except BotoCoreError as e:
        raise VaultError(f"Cannot reach AWS STS at {endpoint} ({type(e).__name__}); "
                         f"{NOT_RUN}") from None
    finally:
        sts.close()


def _policy_problem(text: str) -> str | None:
    if len(text) > POLICY_MAX_CHARS:
        return f"is {len(text)} characters, more than AWS accepts ({POLICY_MAX_CHARS})"
    try:
        statements = json.loads(text)["Statement"]
    except (ValueError, KeyError, TypeError):
        return "is not a policy document"
    if not statements or not all(_named_allow(s) for s in statements):
        return "must allow named actions only"
    return None


def _named_allow(statement: Any) -> bool:
    actions = statement.get("Action") if isinstance(statement, dict) else None
    actions = [actions] if isinstance(actions, str) else actions
    return (statement.get("Effect") == "Allow" and bool(actions)
            and all(isinstance(a, str) and "*" not in a for a in actions))


def _iso(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value or "")
