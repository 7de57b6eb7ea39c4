"""The EC2 instances the AWS connector may change, with the tags policy rules match on.

Policy is pure (no I/O), yet a rule like ``tag.env: prod`` must see the tags of the exact
instance an action will touch. So opsbot lists the region's instances on the host every
:data:`REFRESH_S` and hands them to the connector's config (``tools.aws.AwsConfig.instances``);
targets and approval hashes are computed from that list, and a change to an instance not on it
is refused. The listing uses the same path as an action: a describe-only STS session from the
credential broker (base credential from Vault, session policy ``ec2:DescribeInstances``), revoked
as soon as the page is read. A tag changed since the last listing can be stale for up to a
minute; the action's own preview shows the instance as it is.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from sandbox import inventory
from sandbox.credentials import CredentialBroker, VaultError
from tools.aws import TOOLSET, AwsConfig, InstanceFact, InstancesParams

REFRESH_S = 60.0
LIST_TTL_S = 60.0


class AwsInventory:
    def __init__(self, broker: CredentialBroker, config: AwsConfig) -> None:
        self.broker, self.config = broker, config
        self._calls = itertools.count(1)

    async def facts(self) -> tuple[InstanceFact, ...]:
        """The region's instances, now (raises VaultError or botocore errors)."""
        action = TOOLSET.action("instances")
        assert action is not None
        refs = TOOLSET.secrets(action, InstancesParams(), self.config)
        lease = await self.broker.mint("aws-inventory", f"list-{next(self._calls)}", refs,
                                       LIST_TTL_S)
        try:
            values = {k: v.get_secret_value() for k, v in lease.values.items()}
            return await asyncio.to_thread(self._list, values)
        finally:
            await self.broker.revoke(lease)

    async def watch(self, changed: Callable[[tuple[InstanceFact, ...]], Awaitable[None] | None],
                    last: tuple[InstanceFact, ...] | None = None,
                    interval: float = REFRESH_S) -> None:
        """Call ``changed`` with the list whenever it differs from ``last``; forever. AWS or
        Vault being down keeps the last list."""
        await inventory.watch(self.facts, changed, interval, "aws_inventory.unavailable",
                              (Exception,), _reason, last)

    def _list(self, secrets: dict[str, str]) -> tuple[InstanceFact, ...]:
        import boto3

        scheme, host, port = self.config.endpoint("ec2")
        session = boto3.session.Session(
            aws_access_key_id=secrets["aws_access_key_id"],
            aws_secret_access_key=secrets["aws_secret_access_key"],
            aws_session_token=secrets["aws_session_token"], region_name=self.config.region)
        ec2 = session.client("ec2", endpoint_url=f"{scheme}://{host}:{port}")
        try:
            pages = ec2.get_paginator("describe_instances").paginate()
            found = [_fact(i) for page in pages for r in page.get("Reservations", [])
                     for i in r.get("Instances", [])]
        finally:
            ec2.close()
        return tuple(sorted(found, key=lambda f: f.id))


def _fact(item: dict[str, Any]) -> InstanceFact:
    return InstanceFact(id=item["InstanceId"], state=(item.get("State") or {}).get("Name", ""),
                        tags={t["Key"]: t["Value"] for t in item.get("Tags") or []})


def _reason(error: Exception) -> str:
    return str(error) if isinstance(error, VaultError) else type(error).__name__
