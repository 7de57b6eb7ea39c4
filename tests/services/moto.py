"""A private moto server per test session: AWS's APIs (EC2, S3, IAM, STS, CloudWatch) over real
HTTP on loopback, with IAM authorization on.

Set-up runs with authorization off (moto counts requests until ``INITIAL_NO_AUTH_ACTION_COUNT``),
then ``/moto-api/reset-auth 0`` turns it on for good: from then every request must be signed by
a known key, and its action must be allowed by the caller's IAM policies. What moto checks, and
what it does not (it reads ``moto/iam/access_control.py``):

* it verifies SigV4 signatures and session tokens, the caller's user or role policies
  (inline and attached, actions and resources), and a role's trust policy on ``AssumeRole``;
* it stores an ``AssumeRole`` session policy but never applies it: an assumed-role session can
  do whatever its role may. Tests of "a session cannot call an API outside its action" therefore
  prove opsbot's own check (``tools/aws_ops.py``) and show this gap explicitly.

The account holds two users — ``admin`` (everything; what tests use to seed instances, buckets,
alarms) and ``opsbot`` (may only ``sts:AssumeRole`` the role; its key is the base credential
opsbot keeps in Vault) — and the role ``opsbot-actions``, trusted by ``opsbot`` and allowed the
union of the connector's calls (``tools.aws.API``), nothing else.

Usage::

    def test_x(moto_aws):
        ec2 = moto_aws.client("ec2")                 # as admin
        ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from tests.services import free_port
from tools.aws import API, iam_action

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
ROLE = "opsbot-actions"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE}"
BASE_PATH = "kv/data/aws/opsbot"  # where tests put opsbot's base credential in OpenBao
# moto authorizes calls under their API operation names and signing names (s3:ListBuckets,
# monitoring:DescribeAlarms); AWS's IAM names differ for a few (s3:ListAllMyBuckets,
# s3:GetBucketPublicAccessBlock, cloudwatch:DescribeAlarms), and those are what opsbot's session
# policies say. The test role allows both spellings of the connector's calls.
SIGNING = {"cloudwatch": "monitoring"}
MOTO_NAMES = {f"{SIGNING.get(service, service)}:{operation}"
              for calls in API.values() for service, operation in calls}


@dataclass
class MotoServer:
    url: str
    admin: dict[str, str]  # access key of the admin user (aws_access_key_id=..., ...)
    base: dict[str, str]  # access_key_id / secret_access_key of user opsbot

    def client(self, service: str, **credentials: str) -> Any:
        """A boto3 client of this server, as admin unless credentials are given."""
        keys = credentials or self.admin
        return boto3.session.Session(region_name=REGION, **keys).client(
            service, endpoint_url=self.url)

    def instance(self, **tags: str) -> str:
        """A new running instance with these tags; its id."""
        spec = [{"ResourceType": "instance",
                 "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []
        made = self.client("ec2").run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1,
                                                InstanceType="t3.micro", TagSpecifications=spec)
        return made["Instances"][0]["InstanceId"]

    def state(self, instance_id: str) -> str:
        found = self.client("ec2").describe_instances(InstanceIds=[instance_id])
        return found["Reservations"][0]["Instances"][0]["State"]["Name"]


def moto_binary() -> str:
    beside = Path(sys.executable).parent / "moto_server"
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    if found is None:
        pytest.fail("moto_server was not found: install the test extra (.venv/bin/pip install "
                    "-e '.[test]', which brings moto[server])")
    return found


def _wait(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/moto-api/", timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"moto_server did not answer at {url}:\n"
                        f"{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)


def _user(iam: Any, name: str, policy: dict[str, Any]) -> dict[str, str]:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy",
                        PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}


def _allow(actions: Any, resource: str = "*") -> dict[str, Any]:
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resource}]}


def _set_up(url: str) -> MotoServer:
    anyone = {"aws_access_key_id": "AKIASETUPSETUPSETUP0", "aws_secret_access_key": "x" * 40}
    iam = boto3.session.Session(region_name=REGION, **anyone).client("iam", endpoint_url=url)
    admin = _user(iam, "admin", _allow("*"))
    base = _user(iam, "opsbot", _allow("sts:AssumeRole", ROLE_ARN))
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/opsbot"}}]}
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust))
    union = sorted({iam_action(*call) for calls in API.values() for call in calls}
                   | MOTO_NAMES)
    iam.put_role_policy(RoleName=ROLE, PolicyName="opsbot-connector",
                        PolicyDocument=json.dumps(_allow(union)))
    requests.post(f"{url}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
    return MotoServer(url, {"aws_access_key_id": admin["access_key_id"],
                            "aws_secret_access_key": admin["secret_access_key"]}, base)


@pytest.fixture(scope="session")
def moto_aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    workdir = tmp_path_factory.mktemp("moto")
    port = free_port()
    log = workdir / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([moto_binary(), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(proc, url, log)
        yield _set_up(url)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
