"""The AWS connector against moto's real HTTP server (IAM authorization on), with STS sessions
the broker assumes per action from a base credential kept in the session OpenBao.

Actions run in-process through the sandbox entrypoint's ``handle`` (the code the container
runs, boto3 included); tests/scenarios/test_aws_actions.py runs them in the sandbox through
the egress forwarders. What moto does not check is said where it matters: it ignores session
policies (see tests/services/moto.py), so the test that a session cannot leave its action shows
opsbot's own check doing that, and shows moto letting the same call through without it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets

import pytest
import requests

from sandbox.aws_inventory import AwsInventory
from sandbox.credentials import CredentialBroker, VaultConfig, VaultError
from sandbox.entrypoint import handle
from sandbox.protocol import SandboxRequest
from tests.scenarios.test_vault_e2e import parent_token
from tests.services.moto import BASE_PATH, REGION, ROLE_ARN, MotoServer
from tools.aws import API, TOOLSET, AwsConfig, InstanceFact
from tools.aws_ops import Aws, NotAllowed
from tools.base import ActionContext, Status, Tier
from tools.catalog import Call, CallError, Catalog

_ids = itertools.count()
REFERER = "referer-secret-" + secrets.token_hex(8)
EXTERNAL_ID = "ext-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def aws(openbao, moto_aws: MotoServer):
    openbao.put(BASE_PATH, **moto_aws.base)
    broker = CredentialBroker(VaultConfig(addr=openbao.addr, token=parent_token(openbao)))
    return AwsWorld(moto_aws, broker)


class AwsWorld:
    """The moto account, the broker, and a catalog whose instance list is refreshed on demand."""

    def __init__(self, moto: MotoServer, broker: CredentialBroker) -> None:
        self.moto, self.broker = moto, broker
        self.config = AwsConfig(role_arn=ROLE_ARN, region=REGION, endpoint_url=moto.url,
                                base_credential=BASE_PATH)

    async def catalog(self) -> Catalog:
        facts = await AwsInventory(self.broker, self.config).facts()
        return Catalog([TOOLSET], {"aws": self.config.model_copy(update={"instances": facts})})

    async def act(self, action: str, preview: bool = False, **params):
        catalog = await self.catalog()
        resolved = catalog.resolve(Call(id=f"a{next(_ids)}", toolset="aws", action=action,
                                        params=params))
        refs = resolved.preview_secrets if preview else resolved.secrets
        lease = await self.broker.mint("r-aws", resolved.call.id, refs, resolved.action.timeout)
        request = SandboxRequest(run_id="r-aws", call_id=resolved.call.id, toolset="aws",
                                 action=action, params=resolved.params.model_dump(mode="json"),
                                 config=resolved.config.model_dump(mode="json"),
                                 secrets=dict(lease.values), preview=preview)
        try:
            return await asyncio.to_thread(handle, request.wire(), lambda t: None), lease
        finally:
            await self.broker.revoke(lease)

    async def session(self, action: str, **params) -> dict[str, str]:
        """A live session minted for ``action`` (the caller revokes nothing: STS can't)."""
        resolved = (await self.catalog()).resolve(Call(id=f"s{next(_ids)}", toolset="aws",
                                                       action=action, params=params))
        lease = await self.broker.mint("r-aws", resolved.call.id, resolved.secrets, 30)
        return {k: v.get_secret_value() for k, v in lease.values.items()}


def assumed(moto: MotoServer) -> list[dict]:
    """The sessions moto's STS issued (its state, read over its own API)."""
    return requests.get(f"{moto.url}/moto-api/data.json", timeout=5).json()["sts"]["AssumedRole"]


async def test_describe_returns_the_tests_instances(aws):
    web = aws.moto.instance(Name="web-1", env="prod")
    batch = aws.moto.instance(Name="batch-1", env="dev")
    result, lease = await aws.act("instances", instance_ids=[web, batch])
    assert result.status is Status.OK, result.error
    rows = {r["id"]: r for r in result.data}
    assert set(rows) == {web, batch} and rows[web]["tags"] == {"Name": "web-1", "env": "prod"}
    assert rows[web]["state"] == "running" and rows[web]["type"] == "t3.micro"
    tagged, _ = await aws.act("instances", tag="Name=batch-1")
    assert [r["id"] for r in tagged.data] == [batch]
    (grant,) = lease.grants
    assert grant.kind == "aws" and grant.facts["actions"] == ["ec2:DescribeInstances"]
    assert grant.ttl_s == 900 and not grant.revocable, "AWS's floor; sessions end at expiry"
    session = next(s for s in assumed(aws.moto) if s["session_name"] == grant.facts["session"])
    assert json.loads(session["policy"])["Statement"][0]["Action"] == ["ec2:DescribeInstances"]
    assert session["role_arn"] == ROLE_ARN


async def test_a_change_gets_a_session_for_its_instance_and_its_call(aws):
    doomed = aws.moto.instance(Name="doomed")
    preview, lease = await aws.act("stop", preview=True, instance_ids=[doomed])
    assert preview.status is Status.OK and doomed in preview.output
    assert aws.moto.state(doomed) == "running", "a preview only looks"
    assert lease.grants[0].facts["actions"] == ["ec2:DescribeInstances"]
    stopped, lease = await aws.act("stop", instance_ids=[doomed])
    assert stopped.status is Status.OK, stopped.error
    assert stopped.output == f"{doomed}: running → stopping" and aws.moto.state(doomed) == "stopped"
    policy = json.loads(next(s["policy"] for s in assumed(aws.moto)
                             if s["session_name"] == lease.grants[0].facts["session"]))
    assert policy["Statement"] == [{
        "Action": ["ec2:StopInstances"], "Effect": "Allow",
        "Resource": f"arn:aws:ec2:{REGION}:123456789012:instance/{doomed}"}]
    started, _ = await aws.act("start", instance_ids=[doomed])
    assert started.output == f"{doomed}: stopped → pending"


async def test_a_session_cannot_call_an_api_outside_its_action(aws):
    victim = aws.moto.instance(Name="victim")
    session = await aws.session("instances")  # describe-only
    config = aws.config.model_dump(mode="json")
    describe = Aws(ActionContext(config=config, secrets=session), API["instances"])
    assert describe.client("ec2").describe_instances(InstanceIds=[victim])["Reservations"]
    with pytest.raises(NotAllowed, match="opsbot refused ec2:StopInstances: this action may "
                                         "call ec2:DescribeInstances only"):
        describe.client("ec2").stop_instances(InstanceIds=[victim])
    with pytest.raises(NotAllowed):
        describe.client("iam").list_users()
    assert aws.moto.state(victim) == "running"

    # Without opsbot's check, moto lets the describe-only session stop the instance: moto
    # ignores session policies (AWS would refuse: the session policy allows DescribeInstances
    # alone). moto does enforce the role's own policy: the role may not terminate anything.
    unchecked = Aws(ActionContext(config=config, secrets=session),
                    [("ec2", "StopInstances"), ("ec2", "TerminateInstances")])
    unchecked.client("ec2").stop_instances(InstanceIds=[victim])
    assert aws.moto.state(victim) == "stopped"
    from botocore.exceptions import ClientError
    with pytest.raises(ClientError, match="not authorized to perform: ec2:TerminateInstances"):
        unchecked.client("ec2").terminate_instances(InstanceIds=[victim])


async def test_the_base_credential_alone_can_do_nothing_but_assume_the_role(aws):
    from botocore.exceptions import ClientError
    base = {"aws_access_key_id": aws.moto.base["access_key_id"],
            "aws_secret_access_key": aws.moto.base["secret_access_key"]}
    with pytest.raises(ClientError, match="AuthFailure|not authorized"):
        aws.moto.client("ec2", **base).describe_instances()


async def test_bucket_policy_is_shown_with_principals_secrets_redacted(aws):
    s3 = aws.moto.client("s3")
    s3.create_bucket(Bucket="site-assets")
    policy = {"Version": "2012-10-17", "Statement": [
        {"Sid": "CdnOnly", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::site-assets/*",
         "Condition": {"StringLike": {"aws:Referer": [REFERER]}}},
        {"Sid": "Partner", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::210987654321:role/partner"},
         "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::site-assets",
         "Condition": {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}}}]}
    s3.put_bucket_policy(Bucket="site-assets", Policy=json.dumps(policy))
    result, _ = await aws.act("bucket", bucket="site-assets")
    assert result.status is Status.OK, result.error
    dumped = result.model_dump_json()
    assert REFERER not in dumped and EXTERNAL_ID not in dumped
    statements = result.data["policy"]["Statement"]
    assert statements[0]["Condition"] == {"StringLike": {"aws:Referer": "[redacted]"}}
    assert statements[1]["Principal"] == {"AWS": "arn:aws:iam::210987654321:role/partner"}
    assert "Public-access block: none at bucket level" in result.output


async def test_block_public_access_is_previewed_and_then_applied(aws):
    aws.moto.client("s3").create_bucket(Bucket="open-data")
    preview, _ = await aws.act("block_public", preview=True, bucket="open-data")
    assert "none at bucket level" in preview.output
    done, lease = await aws.act("block_public", bucket="open-data")
    assert done.status is Status.OK, done.error
    block = aws.moto.client("s3").get_public_access_block(Bucket="open-data")
    assert all(block["PublicAccessBlockConfiguration"].values())
    assert lease.grants[0].facts["resources"] == "arn:aws:s3:::open-data"
    reopened, _ = await aws.act("put_public_access_block", bucket="open-data",
                                block_public_acls=False, ignore_public_acls=False,
                                block_public_policy=False, restrict_public_buckets=False)
    assert "BlockPublicAcls=false" in reopened.output
    buckets, _ = await aws.act("buckets")
    assert buckets.status is Status.OK, buckets.error
    assert {"open-data", "site-assets"} <= {b["name"] for b in buckets.data}


async def test_iam_users_access_keys_with_last_use_and_policies(aws):
    iam = aws.moto.client("iam")
    iam.create_user(UserName="deployer")
    key = iam.create_access_key(UserName="deployer")["AccessKey"]
    managed = iam.create_policy(PolicyName="deploy-read", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:Describe*",
                                                "Resource": "*"}]}))["Policy"]["Arn"]
    iam.attach_user_policy(UserName="deployer", PolicyArn=managed)
    iam.put_user_policy(UserName="deployer", PolicyName="deploy-inline",
                        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                            {"Effect": "Allow", "Action": "s3:ListAllMyBuckets",
                             "Resource": "*"}]}))
    users, _ = await aws.act("users")
    assert {"admin", "opsbot", "deployer"} <= {u["user"] for u in users.data}
    keys, _ = await aws.act("access_keys", user="deployer")
    (row,) = keys.data
    assert row["key"] == f"{key['AccessKeyId'][:4]}…{key['AccessKeyId'][-4:]}"
    assert row["status"] == "Active" and key["AccessKeyId"] not in keys.model_dump_json()
    assert key["SecretAccessKey"] not in keys.model_dump_json()
    everyone, _ = await aws.act("access_keys")
    assert {"admin", "opsbot", "deployer"} <= {r["user"] for r in everyone.data}
    used = [r for r in everyone.data if r["user"] == "admin"]
    assert used[0]["last_used"], "moto records the admin key's use"
    policies, _ = await aws.act("user_policies", user="deployer")
    assert policies.data == {"attached": [{"name": "deploy-read", "arn": managed}],
                             "inline": ["deploy-inline"]}


async def test_alarms_in_alarm_state(aws):
    cw = aws.moto.client("cloudwatch")
    for name in ("api-5xx", "api-latency"):
        cw.put_metric_alarm(AlarmName=name, MetricName="5XXError", Namespace="AWS/ApiGateway",
                            Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=1,
                            ComparisonOperator="GreaterThanThreshold")
    cw.set_alarm_state(AlarmName="api-5xx", StateValue="ALARM", StateReason="5xx above 1")
    result, _ = await aws.act("alarms", prefix="api-")
    assert result.status is Status.OK, result.error
    assert [a["name"] for a in result.data] == ["api-5xx"]
    assert "5xx above 1" in result.output


async def test_policy_sees_the_instances_tags_and_refuses_unseen_instances(aws):
    prod = aws.moto.instance(env="prod", team="web")
    catalog = await aws.catalog()
    resolved = catalog.resolve(Call(id="t", toolset="aws", action="stop",
                                    params={"instance_ids": [prod]}))
    assert resolved.target.attrs["tag.env"] == "prod" and resolved.target.attrs["id"] == prod
    assert resolved.target.name == f"arn:aws:ec2:{REGION}:123456789012:instance/{prod}"
    assert [str(e) for e in resolved.egress] == [aws.moto.url.removeprefix("http://")]
    with pytest.raises(CallError, match="opsbot has not seen instance i-0123456789abcdef0"):
        catalog.resolve(Call(id="t", toolset="aws", action="stop",
                             params={"instance_ids": ["i-0123456789abcdef0"]}))
    looked = catalog.resolve(Call(id="t", toolset="aws", action="instances",
                                  params={"instance_ids": ["i-0123456789abcdef0"]}))
    assert "tag.env" not in looked.target.attrs  # a read of an unseen id is fine


def test_tiers_and_default_endpoints():
    tiers = {a.name: int(a.tier) for a in TOOLSET.actions}
    assert (tiers["stop"], tiers["put_public_access_block"]) == (4, 4)
    assert (tiers["start"], tiers["reboot"], tiers["block_public"]) == (3, 3, 3)
    assert {n for n, t in tiers.items() if t == 0} == {
        "instances", "buckets", "bucket", "users", "access_keys", "user_policies", "alarms"}
    config = AwsConfig(role_arn=ROLE_ARN, region="eu-west-1",
                       instances=(InstanceFact(id="i-0123456789abcdef0"),))
    catalog = Catalog([TOOLSET], {"aws": config})
    for action, params, host in [
            ("instances", {}, "ec2.eu-west-1.amazonaws.com:443"),
            ("bucket", {"bucket": "b-1"}, "s3.eu-west-1.amazonaws.com:443"),
            ("users", {}, "iam.amazonaws.com:443"),
            ("alarms", {}, "monitoring.eu-west-1.amazonaws.com:443")]:
        resolved = catalog.resolve(Call(id="t", toolset="aws", action=action, params=params))
        assert [str(e) for e in resolved.egress] == [host]
        (sts,) = {dict(r.params)["sts"] for r in resolved.secrets}
        assert sts == "https://sts.eu-west-1.amazonaws.com"
    assert Tier.OBSERVE == TOOLSET.action("alarms").tier
    for bad in ({"role_arn": "arn:aws:iam::1:role/x"}, {"role_arn": ROLE_ARN, "region": "mars"},
                {"role_arn": ROLE_ARN, "base_credential": "kv/../x"}):
        with pytest.raises(ValueError):
            AwsConfig(**bad)


async def test_assume_role_refusals_are_sentences(aws, openbao):
    from sandbox.credentials.aws import AwsSession
    other = aws.config.model_copy(update={"role_arn": "arn:aws:iam::123456789012:role/nope"})
    catalog = Catalog([TOOLSET], {"aws": other})
    resolved = catalog.resolve(Call(id="n", toolset="aws", action="buckets"))
    with pytest.raises(VaultError, match="AWS STS refused to let opsbot assume "
                                         "arn:aws:iam::123456789012:role/nope"):
        await aws.broker.mint("r-aws", "n", resolved.secrets, 30)
    gone = aws.config.model_copy(update={"endpoint_url": "http://127.0.0.1:9"})
    resolved = Catalog([TOOLSET], {"aws": gone}).resolve(Call(id="g", toolset="aws",
                                                              action="buckets"))
    with pytest.raises(VaultError, match="Cannot reach AWS STS at http://127.0.0.1:9"):
        await aws.broker.mint("r-aws", "g", resolved.secrets, 30)
    wide = resolved.secrets[0].model_copy(update={"params": (
        ("role_arn", ROLE_ARN), ("policy", json.dumps({"Statement": [
            {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]})))})
    with pytest.raises(VaultError, match="must allow named actions only"):
        AwsSession().validate(wide)
