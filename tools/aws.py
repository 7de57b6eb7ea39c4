"""AWS connector: EC2 instances, S3 bucket exposure, IAM users and keys, CloudWatch alarms.

Tier 0: ``instances`` (describe), ``buckets``, ``bucket`` (its policy, redacted, and its
public-access block), ``users``, ``access_keys`` (with last use), ``user_policies``, ``alarms``
(those in ALARM). Tier 3: ``start``, ``reboot``, ``block_public`` (turns all four public-access
blocks on: it can only close a bucket). Tier 4: ``stop``, ``put_public_access_block`` (any
setting, so it can open a bucket). Changes are previewed (the instances, the current block).

Credentials: every action gets an STS session of its own (credential kind ``aws``,
``sandbox/credentials/aws.py``): opsbot's base credential (an IAM user's key in Vault) assumes
``OPSBOT_AWS_ROLE_ARN`` with a *session policy* allowing exactly the action's API calls
(:data:`API`) on its resources (instance, bucket, user ARNs), for as long as AWS allows at the
least (15 minutes). Inside the sandbox each boto3 client also refuses any operation that is not
one of the action's own before a request is made (``tools/aws_ops.py``).

The policy target is kind ``aws``: ``account``, ``region``, ``service``, ``arn`` (comma-joined
for several), the resource's ``id``/``bucket``/``user`` and, for EC2 instances opsbot has seen
(``AwsConfig.instances``, listed on the host), one ``tag.<key>`` per tag they all share.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tools import aws_ops as ops
from tools.base import Action, Endpoint, SecretKind, SecretRef, Target, Tier, Toolset
from tools.catalog import CallError

ROLE_ARN = re.compile(r"arn:aws:iam::(\d{12}):role/[\w+=,.@/-]{1,128}")
InstanceId = Annotated[str, Field(pattern=r"^i-[0-9a-f]{8,17}$", max_length=19)]
BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
USER = r"^[\w+=,.@-]{1,64}$"
# What each action may call: (boto3 service, operation). The session policy allows these alone
# (as IAM actions, :func:`iam_action`), and the sandbox's clients refuse anything else.
API: dict[str, list[tuple[str, str]]] = {
    "instances": [("ec2", "DescribeInstances")],
    "start": [("ec2", "StartInstances")],
    "stop": [("ec2", "StopInstances")],
    "reboot": [("ec2", "RebootInstances")],
    "buckets": [("s3", "ListBuckets")],
    "bucket": [("s3", "GetBucketPolicy"), ("s3", "GetPublicAccessBlock")],
    "block_public": [("s3", "PutPublicAccessBlock")],
    "put_public_access_block": [("s3", "PutPublicAccessBlock")],
    "users": [("iam", "ListUsers")],
    "access_keys": [("iam", "ListUsers"), ("iam", "ListAccessKeys"),
                    ("iam", "GetAccessKeyLastUsed")],
    "user_policies": [("iam", "ListAttachedUserPolicies"), ("iam", "ListUserPolicies")],
    "alarms": [("cloudwatch", "DescribeAlarms")],
}
# What a change's preview calls (it runs with a tier-0 session: it only reads).
PREVIEW = {name: API["instances"] for name in ("start", "stop", "reboot")} | {
    name: [("s3", "GetPublicAccessBlock")] for name in ("block_public", "put_public_access_block")}
_IAM_NAMES = {("s3", "ListBuckets"): "s3:ListAllMyBuckets",
              ("s3", "GetPublicAccessBlock"): "s3:GetBucketPublicAccessBlock",
              ("s3", "PutPublicAccessBlock"): "s3:PutBucketPublicAccessBlock"}
HOSTS = {"ec2": "ec2.{region}.amazonaws.com", "s3": "s3.{region}.amazonaws.com",
         "iam": "iam.amazonaws.com", "cloudwatch": "monitoring.{region}.amazonaws.com",
         "sts": "sts.{region}.amazonaws.com"}


class InstanceFact(BaseModel):
    """An EC2 instance as opsbot last listed it on the host (for policy: its tags)."""

    model_config = ConfigDict(frozen=True)

    id: str
    state: str = ""
    tags: dict[str, str] = {}


class AwsConfig(BaseModel):
    """One account and region, the role actions assume, and the base credential in Vault."""

    model_config = ConfigDict(frozen=True)

    role_arn: str
    region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    base_credential: str = "kv/data/aws/opsbot"  # keys access_key_id, secret_access_key
    endpoint_url: str | None = None  # one endpoint for every service (LocalStack, moto, proxy)
    instances: tuple[InstanceFact, ...] = ()

    @field_validator("role_arn")
    @classmethod
    def _role(cls, arn: str) -> str:
        if not ROLE_ARN.fullmatch(arn):
            raise ValueError("must be an IAM role ARN like arn:aws:iam::123456789012:role/opsbot")
        return arn

    @field_validator("base_credential")
    @classmethod
    def _kv(cls, path: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+", path) or ".." in path:
            raise ValueError("must be a KV v2 path like kv/data/aws/opsbot (keys access_key_id "
                             "and secret_access_key)")
        return path

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            raise ValueError("must be an http(s) URL such as https://aws-proxy.internal:4566")
        return url.rstrip("/")

    @property
    def account(self) -> str:
        match = ROLE_ARN.fullmatch(self.role_arn)
        return match.group(1) if match else ""

    def endpoint(self, service: str) -> tuple[str, str, int]:
        """(scheme, host, port) a client of ``service`` dials."""
        if self.endpoint_url:
            parts = urlsplit(self.endpoint_url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            return parts.scheme, parts.hostname or "", port
        return "https", HOSTS[service].format(region=self.region), 443

    def signing_region(self, service: str) -> str:
        return "us-east-1" if service == "iam" else self.region


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InstancesParams(_Strict):
    instance_ids: list[InstanceId] | None = Field(None, max_length=100,
                                                  description="Only these instances.")
    tag: str | None = Field(None, pattern=r"^[^=\x00-\x1f]{1,128}=[^\x00-\x1f]{0,256}$",
                            max_length=385,
                            description="Only instances with this tag, key=value.")


class InstanceChange(_Strict):
    instance_ids: list[InstanceId] = Field(min_length=1, max_length=20,
                                           description="The instances, e.g. [i-0abc123def4567890].")


class BucketParams(_Strict):
    bucket: str = Field(pattern=BUCKET, max_length=63, description="The S3 bucket's name.")


class BlockParams(BucketParams):
    block_public_acls: bool
    ignore_public_acls: bool
    block_public_policy: bool
    restrict_public_buckets: bool


class NoParams(_Strict):
    pass


class UserParams(_Strict):
    user: str | None = Field(None, pattern=USER, max_length=64,
                             description="One IAM user (default: all).")


class OneUser(_Strict):
    user: str = Field(pattern=USER, max_length=64, description="The IAM user's name.")


class AlarmsParams(_Strict):
    prefix: str | None = Field(None, max_length=255, pattern=r"^[^\x00-\x1f]*$",
                               description="Only alarms whose name starts with this.")


def iam_action(service: str, operation: str) -> str:
    return _IAM_NAMES.get((service, operation), f"{service}:{operation}")


def _instances(p: Any) -> list[str]:
    return list(getattr(p, "instance_ids", None) or [])


def resources(action: Action[Any], p: BaseModel, config: AwsConfig) -> list[str]:
    """The ARNs the action's session policy names (``*`` where the API has no resource)."""
    account, region = config.account, config.region
    if action.name in ("start", "stop", "reboot"):
        return [f"arn:aws:ec2:{region}:{account}:instance/{i}" for i in _instances(p)]
    if isinstance(p, BucketParams):
        return [f"arn:aws:s3:::{p.bucket}"]
    if action.name in ("users", "access_keys", "user_policies"):
        user = getattr(p, "user", None)
        return [f"arn:aws:iam::{account}:user/{user or '*'}"]
    return ["*"]


def calls(action: Action[Any]) -> list[tuple[str, str]]:
    """The action's API calls; a change asked for at tier 0 is its preview, which only reads."""
    own = TOOLSET.action(action.name)
    if own is not None and action.tier < own.tier and action.name in PREVIEW:
        return PREVIEW[action.name]
    return API[action.name]


def session_policy(action: Action[Any], p: BaseModel, config: AwsConfig) -> str:
    """The STS session policy: the action's IAM actions on its resources, nothing else."""
    own = calls(action)
    arns = resources(action, p, config)
    if own and own[0] == ("ec2", "DescribeInstances"):
        arns = ["*"]  # DescribeInstances has no resource-level permission
    statement = {"Effect": "Allow", "Action": sorted({iam_action(*c) for c in own}),
                 "Resource": arns if len(arns) > 1 else arns[0]}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]},
                      separators=(",", ":"), sort_keys=True)


def _target(action: Action[Any], p: BaseModel, config: AwsConfig) -> Target:
    service = API[action.name][0][0]
    arns = [a for a in resources(action, p, config) if a != "*" and not a.endswith("/*")]
    attrs = {"account": config.account, "region": config.region, "service": service,
             "action": action.name}
    if arns:
        attrs["arn"] = ",".join(arns)
    if isinstance(p, BucketParams):
        attrs["bucket"] = p.bucket
    if getattr(p, "user", None):
        attrs["user"] = p.user  # type: ignore[attr-defined]
    ids = _instances(p)
    if ids:
        attrs |= {"id": ",".join(ids), **_shared_tags(ids, config, action)}
    name = arns[0] if len(arns) == 1 else f"{len(arns)} {service} resources" if arns else \
        f"{config.account}/{config.region}"
    return Target(kind="aws", name=name, attrs=attrs)


def _shared_tags(ids: list[str], config: AwsConfig, action: Action[Any]) -> dict[str, str]:
    """``tag.<key>`` for the tags every named instance carries; a change to an instance opsbot
    has not seen is refused (policy could not see its tags)."""
    seen = {fact.id: fact for fact in config.instances}
    unknown = [i for i in ids if i not in seen]
    if unknown and action.tier > Tier.RECOMMEND:
        raise CallError(f"opsbot has not seen instance {', '.join(unknown)} in "
                        f"{config.region} (it lists them every minute); check the id.")
    facts = [seen[i] for i in ids if i in seen]
    shared = dict(facts[0].tags) if facts and not unknown else {}
    for fact in facts[1:]:
        shared = {k: v for k, v in shared.items() if fact.tags.get(k) == v}
    return {f"tag.{k}": v for k, v in shared.items()}


def _egress(action: Action[Any], p: BaseModel, config: AwsConfig) -> list[Endpoint]:
    services = dict.fromkeys(service for service, _ in calls(action))
    ends = {config.endpoint(s)[1:] for s in services}
    return [Endpoint(host=h, port=port) for h, port in sorted(ends)]


def _secrets(action: Action[Any], p: BaseModel, config: AwsConfig) -> list[SecretRef]:
    """One STS session for the action (three values of one issue: same path and params)."""
    sts = config.endpoint_url or f"https://{HOSTS['sts'].format(region=config.region)}"
    scope = (("role_arn", config.role_arn), ("region", config.region), ("sts", sts),
             ("policy", session_policy(action, p, config)))
    return [SecretRef(name=f"aws_{key}", path=config.base_credential, key=key,
                      kind=SecretKind.AWS, params=scope)
            for key in ("access_key_id", "secret_access_key", "session_token")]


def _ids_text(p: Any) -> str:
    return ", ".join(_instances(p))


def _action(name: str, tier: Tier, description: str, params: type[BaseModel], summary,
            run, preview=None) -> Action[Any]:
    return Action(name=name, description=description, tier=tier, params=params, summary=summary,
                  run=ops.guarded(run, API[name]), timeout=60,
                  preview=ops.guarded(preview, PREVIEW[name]) if preview else None)


ACTIONS: list[Action[Any]] = [
    _action("instances", Tier.OBSERVE, "Describe EC2 instances (state, type, launch time, tags), "
            "all or some by id or tag.", InstancesParams,
            lambda p: f"Describe EC2 instances ({_ids_text(p) or p.tag or 'all'})", ops.instances),
    _action("start", Tier.SANDBOX_EXECUTE, "Start stopped EC2 instances.", InstanceChange,
            lambda p: f"Start EC2 instances {_ids_text(p)}", ops.change("start"), ops.instances),
    _action("reboot", Tier.SANDBOX_EXECUTE, "Reboot running EC2 instances.", InstanceChange,
            lambda p: f"Reboot EC2 instances {_ids_text(p)}", ops.change("reboot"),
            ops.instances),
    _action("stop", Tier.PRODUCTION, "Stop running EC2 instances.", InstanceChange,
            lambda p: f"Stop EC2 instances {_ids_text(p)}", ops.change("stop"), ops.instances),
    _action("buckets", Tier.OBSERVE, "List S3 buckets with their creation dates.", NoParams,
            lambda p: "List S3 buckets", ops.buckets),
    _action("bucket", Tier.OBSERVE, "One bucket's exposure: its bucket policy (secrets in "
            "conditions redacted) and its public-access block.", BucketParams,
            lambda p: f"Read the policy and public-access block of bucket {p.bucket}",
            ops.bucket),
    _action("block_public", Tier.SANDBOX_EXECUTE, "Turn on all four public-access blocks of a "
            "bucket (it can only make the bucket less public).", BucketParams,
            lambda p: f"Block all public access to bucket {p.bucket}", ops.block_public,
            ops.public_access),
    _action("put_public_access_block", Tier.PRODUCTION, "Set a bucket's four public-access block "
            "flags (turning one off can expose the bucket).", BlockParams,
            lambda p: f"Set the public-access block of bucket {p.bucket}", ops.put_block,
            ops.public_access),
    _action("users", Tier.OBSERVE, "List IAM users with creation and password last used dates.",
            NoParams, lambda p: "List IAM users", ops.users),
    _action("access_keys", Tier.OBSERVE, "IAM access keys (one user's or everyone's): status, "
            "age, and when, where and for which service each was last used.", UserParams,
            lambda p: f"List access keys of {p.user or 'every IAM user'} with last use",
            ops.access_keys),
    _action("user_policies", Tier.OBSERVE, "The managed policies attached to an IAM user and the "
            "names of its inline policies.", OneUser,
            lambda p: f"List the policies of IAM user {p.user}", ops.user_policies),
    _action("alarms", Tier.OBSERVE, "CloudWatch alarms currently in ALARM state.", AlarmsParams,
            lambda p: "List CloudWatch alarms in ALARM" + (f" ({p.prefix}*)" if p.prefix else ""),
            ops.alarms),
]

TOOLSET: Toolset[AwsConfig] = Toolset(
    name="aws",
    description="AWS: EC2 instances (describe; with approval start, reboot, stop), S3 bucket "
    "exposure (policy, public-access block; with approval block public access), IAM users, "
    "access keys and policies, CloudWatch alarms in ALARM.",
    config=AwsConfig,
    actions=ACTIONS,
    target=_target,
    egress=_egress,
    secrets=_secrets,
    target_kinds=("aws",),
    # A pool kind of its own: containers that parsed boto3's service models ahead of the call
    # (seconds of CPU), so the common pool does not carry them (~60 MB each).
    warm=lambda config: ["python3", "-m", "sandbox.entrypoint", "--preload", "--warm",
                         "tools.aws_ops:warm"],
    env={"role_arn": "OPSBOT_AWS_ROLE_ARN", "region": "OPSBOT_AWS_REGION",
         "base_credential": "OPSBOT_AWS_BASE_CREDENTIAL", "endpoint_url": "OPSBOT_AWS_ENDPOINT_URL"},
)
