"""What the AWS actions do inside the sandbox (``tools/aws.py`` declares them).

Every boto3 client is built here by :class:`Aws`: it signs with the action's STS session (never
a credential from the environment or an instance profile), dials only the endpoint the action
declared (through the sandbox's egress), and refuses, before any request, an operation that is
not one of the action's own (:class:`NotAllowed`). AWS itself enforces the same through the
session policy; this check holds where AWS-compatible servers ignore session policies (moto
does) and makes a mistake in a connector fail loudly instead of quietly widening what it does.

Bucket policies are shown with the values of conditions that act as shared secrets
(:data:`SECRET_CONDITIONS`: a ``Referer`` check, an ``ExternalId``) masked; access key ids are
shown as their first and last four characters.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from tools.base import ActionContext, ToolResult

MASK = "[redacted]"
SECRET_CONDITIONS = frozenset({"aws:referer", "sts:externalid"})
BLOCK_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
               "RestrictPublicBuckets")
Call = tuple[str, str]


class NotAllowed(Exception):
    """An operation outside the action's declared calls; ``str(e)`` is the sentence."""


SERVICES = ("ec2", "s3", "iam", "cloudwatch")
_session: Any = None


def _shared() -> Any:
    """One boto3 session per process, holding no credentials (every client is given the
    action's): it caches the parsed service models, so a client after the first costs a
    fraction of a second instead of seconds."""
    global _session
    if _session is None:
        import boto3

        _session = boto3.session.Session()
    return _session


def warm() -> None:
    """Parse the connector's service models ahead of a call (its warm-pool kind runs this)."""
    for service in SERVICES:  # creating a client makes no request
        _shared().client(service, region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                         aws_access_key_id="warm", aws_secret_access_key="warm")


class Aws:
    """Clients for one action: its session, its endpoints, its calls alone."""

    def __init__(self, ctx: ActionContext, allowed: list[Call]) -> None:
        from tools.aws import AwsConfig

        self.config = AwsConfig.model_validate(ctx.config)
        self.ctx, self.allowed = ctx, list(allowed)

    def client(self, service: str) -> Any:
        from botocore.config import Config

        secrets = self.ctx.secrets
        if not secrets.get("aws_session_token"):
            raise NotAllowed("this action was given no AWS session; it did not call AWS.")
        scheme, host, port = self.config.endpoint(service)
        host, port = self.ctx.address(host, port)
        client = _shared().client(
            service, region_name=self.config.signing_region(service),
            endpoint_url=f"{scheme}://{host}:{port}",
            aws_access_key_id=secrets["aws_access_key_id"],
            aws_secret_access_key=secrets["aws_secret_access_key"],
            aws_session_token=secrets["aws_session_token"], config=Config(
                retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5,
                read_timeout=30, s3={"addressing_style": "path"}, user_agent_extra="opsbot"))
        client.meta.events.register("before-call", self._check(service))
        return client

    def _check(self, service: str) -> Callable[..., None]:
        def check(model: Any, **_: Any) -> None:
            if (service, model.name) not in self.allowed:
                own = ", ".join(f"{s}:{o}" for s, o in self.allowed)
                raise NotAllowed(f"opsbot refused {service}:{model.name}: this action may call "
                                 f"{own} only.")

        return check


def guarded(run: Callable[[Any, Aws], ToolResult], allowed: list[Call]
            ) -> Callable[[BaseModel, ActionContext], ToolResult]:
    """Failures as values: a refused call, what AWS answered, or a connection problem."""
    def action(params: BaseModel, ctx: ActionContext) -> ToolResult:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return run(params, Aws(ctx, allowed))
        except NotAllowed as e:
            return ToolResult.fail("aws", str(e))
        except ClientError as e:
            error = e.response.get("Error") or {}
            return ToolResult.fail(f"aws {e.operation_name}", f"AWS answered "
                                   f"{error.get('Code', '?')}: {error.get('Message', 'no message')}")
        except BotoCoreError as e:
            return ToolResult.fail("aws", f"Cannot reach AWS: {type(e).__name__}.")

    return action


def _pages(client: Any, operation: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    return [item for page in client.get_paginator(operation).paginate(**kwargs)
            for item in page.get(key, [])]


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else str(value or "")


# --- EC2 --------------------------------------------------------------------------------------

def instances(p: Any, aws: Aws) -> ToolResult:
    kwargs: dict[str, Any] = {}
    if getattr(p, "instance_ids", None):
        kwargs["InstanceIds"] = list(p.instance_ids)
    if getattr(p, "tag", None):
        key, _, value = p.tag.partition("=")
        kwargs["Filters"] = [{"Name": f"tag:{key}", "Values": [value]}]
    found = [i for r in _pages(aws.client("ec2"), "describe_instances", "Reservations", **kwargs)
             for i in r.get("Instances", [])]
    rows = [_instance(i) for i in found]
    inv = "aws ec2 describe-instances" + (f" --instance-ids {' '.join(kwargs['InstanceIds'])}"
                                          if "InstanceIds" in kwargs else "")
    if not rows:
        return ToolResult.no_data(inv, "No instances match.")
    lines = [f"{r['id']}  {r['state']}  {r['type']}  {r['az']}  launched {r['launched']}  "
             + " ".join(f"{k}={v}" for k, v in sorted(r["tags"].items())) for r in rows]
    return ToolResult.ok(inv, "\n".join(lines), rows)


def _instance(item: dict[str, Any]) -> dict[str, Any]:
    return {"id": item["InstanceId"], "state": (item.get("State") or {}).get("Name", ""),
            "type": item.get("InstanceType", ""), "launched": _when(item.get("LaunchTime")),
            "az": (item.get("Placement") or {}).get("AvailabilityZone", ""),
            "private_ip": item.get("PrivateIpAddress"), "public_ip": item.get("PublicIpAddress"),
            "tags": {t["Key"]: t["Value"] for t in item.get("Tags") or []}}


def change(verb: str) -> Callable[[Any, Aws], ToolResult]:
    def run(p: Any, aws: Aws) -> ToolResult:
        ids = list(p.instance_ids)
        ec2 = aws.client("ec2")
        inv = f"aws ec2 {verb}-instances --instance-ids {' '.join(ids)}"
        if verb == "reboot":
            ec2.reboot_instances(InstanceIds=ids)
            return ToolResult.ok(inv, f"Reboot requested for {', '.join(ids)}.")
        body = getattr(ec2, f"{verb}_instances")(InstanceIds=ids)
        moves = [(c["InstanceId"], c["PreviousState"]["Name"], c["CurrentState"]["Name"])
                 for c in body.get(f"{'Starting' if verb == 'start' else 'Stopping'}Instances", [])]
        text = "\n".join(f"{i}: {before} → {after}" for i, before, after in moves)
        return ToolResult.ok(inv, text or f"{verb} requested.", moves)

    return run


# --- S3 ---------------------------------------------------------------------------------------

def buckets(p: Any, aws: Aws) -> ToolResult:
    listed = aws.client("s3").list_buckets().get("Buckets", [])
    rows = [{"name": b["Name"], "created": _when(b.get("CreationDate"))} for b in listed]
    if not rows:
        return ToolResult.no_data("aws s3api list-buckets", "No buckets.")
    text = "\n".join(f"{r['name']}  created {r['created']}" for r in rows)
    return ToolResult.ok("aws s3api list-buckets", text, rows)


def bucket(p: Any, aws: Aws) -> ToolResult:
    s3 = aws.client("s3")
    policy = _missing_is_none(lambda: s3.get_bucket_policy(Bucket=p.bucket)["Policy"],
                              "NoSuchBucketPolicy")
    shown = redact_policy(json.loads(policy)) if policy else None
    block = _block(s3, p.bucket)
    lines = [f"Bucket {p.bucket}", "Policy: " + (json.dumps(shown, indent=1) if shown else
                                                  "none"), _block_text(block)]
    return ToolResult.ok(f"aws s3api get-bucket-policy --bucket {p.bucket}", "\n".join(lines),
                         {"policy": shown, "public_access_block": block})


def public_access(p: Any, aws: Aws) -> ToolResult:
    block = _block(aws.client("s3"), p.bucket)
    return ToolResult.ok(f"aws s3api get-public-access-block --bucket {p.bucket}",
                         f"Bucket {p.bucket} now: {_block_text(block)}", block)


def block_public(p: Any, aws: Aws) -> ToolResult:
    return _put_block(aws, p.bucket, dict.fromkeys(BLOCK_FLAGS, True))


def put_block(p: Any, aws: Aws) -> ToolResult:
    flags = {"BlockPublicAcls": p.block_public_acls, "IgnorePublicAcls": p.ignore_public_acls,
             "BlockPublicPolicy": p.block_public_policy,
             "RestrictPublicBuckets": p.restrict_public_buckets}
    return _put_block(aws, p.bucket, flags)


def _put_block(aws: Aws, name: str, flags: dict[str, bool]) -> ToolResult:
    aws.client("s3").put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=flags)
    return ToolResult.ok(f"aws s3api put-public-access-block --bucket {name}",
                         f"Bucket {name}: {_block_text(flags)}", flags)


def _block(s3: Any, name: str) -> dict[str, bool] | None:
    return _missing_is_none(lambda: s3.get_public_access_block(Bucket=name)[
        "PublicAccessBlockConfiguration"], "NoSuchPublicAccessBlockConfiguration")


def _block_text(block: dict[str, bool] | None) -> str:
    if not block:
        return "Public-access block: none at bucket level (only the account's applies)"
    return "Public-access block: " + ", ".join(f"{k}={str(block.get(k)).lower()}"
                                                for k in BLOCK_FLAGS)


def _missing_is_none(read: Callable[[], Any], code: str) -> Any:
    from botocore.exceptions import ClientError

    try:
        return read()
    except ClientError as e:
        if (e.response.get("Error") or {}).get("Code") == code:
            return None
        raise


def redact_policy(policy: Any) -> Any:
    """The policy with the values of secret-bearing condition keys masked, at any depth."""
    if isinstance(policy, list):
        return [redact_policy(item) for item in policy]
    if not isinstance(policy, dict):
        return policy
    out = {}
    for key, value in policy.items():
        if key == "Condition" and isinstance(value, dict):
            out[key] = {op: {k: MASK if k.lower() in SECRET_CONDITIONS else v
                             for k, v in (keys or {}).items()} for op, keys in value.items()}
        else:
            out[key] = redact_policy(value)
    return out


# --- IAM --------------------------------------------------------------------------------------

def users(p: Any, aws: Aws) -> ToolResult:
    listed = _pages(aws.client("iam"), "list_users", "Users")
    rows = [{"user": u["UserName"], "arn": u["Arn"], "created": _when(u.get("CreateDate")),
             "password_last_used": _when(u.get("PasswordLastUsed")) or None} for u in listed]
    if not rows:
        return ToolResult.no_data("aws iam list-users", "No IAM users.")
    text = "\n".join(f"{r['user']}  created {r['created']}  password last used "
                     f"{r['password_last_used'] or 'never'}" for r in rows)
    return ToolResult.ok("aws iam list-users", text, rows)


def access_keys(p: Any, aws: Aws) -> ToolResult:
    iam = aws.client("iam")
    names = [p.user] if p.user else [u["UserName"] for u in _pages(iam, "list_users", "Users")]
    rows = [_key(iam, name, key) for name in names
            for key in _pages(iam, "list_access_keys", "AccessKeyMetadata", UserName=name)]
    inv = "aws iam list-access-keys" + (f" --user-name {p.user}" if p.user else "")
    if not rows:
        return ToolResult.no_data(inv, "No access keys.")
    text = "\n".join(f"{r['user']}  {r['key']}  {r['status']}  created {r['created']}  last used "
                     f"{r['last_used'] or 'never'}"
                     + (f" ({r['service']}, {r['region']})" if r["last_used"] else "")
                     for r in rows)
    return ToolResult.ok(inv, text, rows)


def _key(iam: Any, user: str, key: dict[str, Any]) -> dict[str, Any]:
    key_id = key["AccessKeyId"]
    used = iam.get_access_key_last_used(AccessKeyId=key_id).get("AccessKeyLastUsed") or {}
    return {"user": user, "key": f"{key_id[:4]}…{key_id[-4:]}", "status": key.get("Status"),
            "created": _when(key.get("CreateDate")), "last_used": _when(used.get("LastUsedDate"))
            or None, "service": used.get("ServiceName"), "region": used.get("Region")}


def user_policies(p: Any, aws: Aws) -> ToolResult:
    iam = aws.client("iam")
    attached = _pages(iam, "list_attached_user_policies", "AttachedPolicies", UserName=p.user)
    inline = _pages(iam, "list_user_policies", "PolicyNames", UserName=p.user)
    data = {"attached": [{"name": a["PolicyName"], "arn": a["PolicyArn"]} for a in attached],
            "inline": list(inline)}
    lines = [f"{a['name']}  {a['arn']}" for a in data["attached"]]
    lines += [f"{name}  (inline)" for name in data["inline"]]
    inv = f"aws iam list-attached-user-policies --user-name {p.user}"
    if not lines:
        return ToolResult.no_data(inv, f"IAM user {p.user} has no policies.")
    return ToolResult.ok(inv, "\n".join(lines), data)


# --- CloudWatch -------------------------------------------------------------------------------

def alarms(p: Any, aws: Aws) -> ToolResult:
    kwargs: dict[str, Any] = {"StateValue": "ALARM"}
    if p.prefix:
        kwargs["AlarmNamePrefix"] = p.prefix
    found = [a for a in _pages(aws.client("cloudwatch"), "describe_alarms", "MetricAlarms",
                               **kwargs) if a.get("StateValue") == "ALARM"]  # moto ignores the filter
    rows = [{"name": a["AlarmName"], "metric": a.get("MetricName"),
             "namespace": a.get("Namespace"), "reason": a.get("StateReason"),
             "since": _when(a.get("StateUpdatedTimestamp"))} for a in found]
    inv = "aws cloudwatch describe-alarms --state-value ALARM"
    if not rows:
        return ToolResult.no_data(inv, "No alarms in ALARM.")
    text = "\n".join(f"{r['name']}  {r['namespace']}/{r['metric']}  since {r['since']}: "
                     f"{r['reason']}" for r in rows)
    return ToolResult.ok(inv, text, rows)
