"""EC2 operations the agent performs: discover its launch configuration, launch, terminate, promote,
and take the region's inventory. Every call is logged; every destructive call is logged with its reason
and refused on an instance that is not tagged ManagedBy=SpotOptimizer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from spot_optimizer.aws.errors import translated
from spot_optimizer.core.commands import LaunchParams
from spot_optimizer.core.errors import InvalidRequestError, NotFoundError, NotManagedError
from spot_optimizer.core.models import (
    DEMOTED_AT_TAG,
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    PROMOTED_AT_TAG,
    REQUEST_ID_TAG,
    ROLE_TAG,
    WORKLOAD_TAG,
    InstanceRecord,
    LaunchConfig,
    Market,
    Pool,
    Role,
)

logger = logging.getLogger(__name__)

GONE_STATES = frozenset({"shutting-down", "terminated"})
# Tags copied from the parent that must not be copied onto a new instance: they are ours to set, or AWS's.
_NOT_INHERITED_PREFIXES = ("aws:", "SpotOptimizer:")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", []) or []}


def market_of(instance: dict[str, Any]) -> Market:
    return Market.SPOT if instance.get("InstanceLifecycle") == "spot" else Market.ON_DEMAND


def pool_of(instance: dict[str, Any], region: str) -> Pool:
    return Pool(
        region=region,
        instance_type=instance["InstanceType"],
        az=instance["Placement"]["AvailabilityZone"],
        market=market_of(instance),
    )


def to_record(instance: dict[str, Any], region: str) -> InstanceRecord:
    launch_time = instance.get("LaunchTime")
    return InstanceRecord(
        instance_id=instance["InstanceId"],
        state=instance["State"]["Name"],
        az=instance["Placement"]["AvailabilityZone"],
        instance_type=instance["InstanceType"],
        pool=pool_of(instance, region).pool_id,
        market=market_of(instance),
        tags=tags_of(instance),
        launch_time=launch_time.isoformat() if isinstance(launch_time, datetime) else launch_time,
        private_ip=instance.get("PrivateIpAddress"),
        public_ip=instance.get("PublicIpAddress"),
    )


class Ec2Operations:
    """The agent's EC2 side. `client` is a boto3 EC2 client (see aws.session)."""

    def __init__(self, client: Any, region: str, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.client = client
        self.region = region
        self._clock = clock

    # --- reading ---------------------------------------------------------------------------------
    def describe_instance(self, instance_id: str, request_id: str | None = None) -> dict[str, Any] | None:
        logger.debug("AWS call: DescribeInstances InstanceIds=[%s]", instance_id)
        try:
            with translated("DescribeInstances", request_id):
                response = self.client.describe_instances(InstanceIds=[instance_id])
        except NotFoundError:
            return None
        for reservation in response.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                return dict(instance)
        return None

    def describe_some(self, instance_ids: list[str], request_id: str | None = None) -> dict[str, dict[str, Any]]:
        """Several instances in one DescribeInstances; those that do not exist are absent from the answer.
        AWS refuses the whole call when one id is unknown: then each is asked for alone."""
        logger.debug("AWS call: DescribeInstances InstanceIds=%s", instance_ids)
        try:
            with translated("DescribeInstances", request_id):
                response = self.client.describe_instances(InstanceIds=list(instance_ids))
        except NotFoundError:
            found = {i: self.describe_instance(i, request_id) for i in instance_ids}
            return {i: inst for i, inst in found.items() if inst is not None}
        return {inst["InstanceId"]: dict(inst) for r in response.get("Reservations", []) for inst in r["Instances"]}

    def discover_launch_config(self, instance_id: str) -> LaunchConfig:
        """The seed's get_detailed_instance_config: what a sibling of this instance needs."""
        instance = self.describe_instance(instance_id)
        if instance is None:
            raise NotFoundError(f"own instance {instance_id} not found", operation="DescribeInstances")
        profile = instance.get("IamInstanceProfile") or {}
        tags = tags_of(instance)
        config = LaunchConfig(
            ami_id=instance["ImageId"],
            instance_type=instance["InstanceType"],
            availability_zone=instance["Placement"]["AvailabilityZone"],
            subnet_id=instance.get("SubnetId"),
            vpc_id=instance.get("VpcId"),
            security_groups=[sg["GroupId"] for sg in instance.get("SecurityGroups", [])],
            iam_instance_profile=profile.get("Arn"),
            key_name=instance.get("KeyName"),
            tags=tags,
        )
        logger.info(
            "Launch configuration of %s: ami=%s type=%s az=%s subnet=%s vpc=%s security_groups=%s "
            "instance_profile=%s key=%s tags=%s",
            instance_id, config.ami_id, config.instance_type, config.availability_zone, config.subnet_id,
            config.vpc_id, config.security_groups, config.iam_instance_profile, config.key_name, tags,
        )
        return config

    def find_by_request_id(self, request_id: str) -> dict[str, Any] | None:
        """The instance an earlier attempt of this command launched, if any (not terminated)."""
        logger.debug("AWS call: DescribeInstances tag:%s=%s", REQUEST_ID_TAG, request_id)
        with translated("DescribeInstances", request_id):
            paginator = self.client.get_paginator("describe_instances")
            pages = paginator.paginate(Filters=[{"Name": f"tag:{REQUEST_ID_TAG}", "Values": [request_id]}])
            for page in pages:
                for reservation in page.get("Reservations", []):
                    for instance in reservation.get("Instances", []):
                        if instance["State"]["Name"] != "terminated":
                            return dict(instance)
        return None

    def workload_instances(self, workload: str) -> list[dict[str, Any]]:
        """Live (pending/running) managed instances of a workload, e.g. a replacement already launched."""
        logger.debug("AWS call: DescribeInstances tag:%s=%s (live, managed)", WORKLOAD_TAG, workload)
        found: list[dict[str, Any]] = []
        with translated("DescribeInstances"):
            for page in self.client.get_paginator("describe_instances").paginate(Filters=[
                {"Name": f"tag:{WORKLOAD_TAG}", "Values": [workload]},
                {"Name": f"tag:{MANAGED_BY_KEY}", "Values": [MANAGED_BY_VALUE]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ]):
                for reservation in page.get("Reservations", []):
                    found.extend(dict(i) for i in reservation.get("Instances", []))
        return found

    def subnet_for(self, config: LaunchConfig, az: str | None, request_id: str | None = None) -> str | None:
        """The parent's subnet, or a subnet of the same VPC in the requested AZ."""
        if az is None or az == config.availability_zone or not config.vpc_id:
            return config.subnet_id
        logger.debug("AWS call: DescribeSubnets vpc-id=%s availability-zone=%s", config.vpc_id, az)
        with translated("DescribeSubnets", request_id):
            response = self.client.describe_subnets(
                Filters=[{"Name": "vpc-id", "Values": [config.vpc_id]},
                         {"Name": "availability-zone", "Values": [az]}]
            )
        subnets = sorted(response.get("Subnets", []), key=lambda s: -int(s.get("AvailableIpAddressCount", 0)))
        if not subnets:
            raise InvalidRequestError(
                f"no subnet of VPC {config.vpc_id} in {az}", code="NoSubnetInAz", operation="DescribeSubnets",
                request_id=request_id,
            )
        return str(subnets[0]["SubnetId"])

    def inventory(self) -> list[InstanceRecord]:
        """Every instance of the region (all pages)."""
        logger.debug("AWS call: DescribeInstances (paginated, whole region %s)", self.region)
        records: list[InstanceRecord] = []
        with translated("DescribeInstances"):
            for page in self.client.get_paginator("describe_instances").paginate():
                for reservation in page.get("Reservations", []):
                    for instance in reservation.get("Instances", []):
                        records.append(to_record(instance, self.region))
        for rec in records:
            logger.debug(
                "  - %s: %s, %s, %s, pool=%s, role=%s, managed=%s",
                rec.instance_id, rec.state, rec.instance_type, rec.az, rec.pool, rec.tags.get(ROLE_TAG),
                rec.managed,
            )
        logger.info("Inventory collected: %d instances in %s", len(records), self.region)
        return records

    # --- acting ----------------------------------------------------------------------------------
    def build_launch_request(
        self, params: LaunchParams, config: LaunchConfig, request_id: str, subnet_id: str | None
    ) -> dict[str, Any]:
        tags = {k: v for k, v in config.tags.items() if not k.startswith(_NOT_INHERITED_PREFIXES)}
        tags.update({
            MANAGED_BY_KEY: MANAGED_BY_VALUE,
            ROLE_TAG: params.role.value,
            REQUEST_ID_TAG: request_id,
        })
        workload = params.workload or config.tags.get(WORKLOAD_TAG)
        if workload:
            tags[WORKLOAD_TAG] = workload
        request: dict[str, Any] = {
            "ImageId": config.ami_id,
            "InstanceType": params.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": request_id[:64],
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]}
            ],
        }
        if subnet_id:
            request["SubnetId"] = subnet_id
        elif params.az:
            request["Placement"] = {"AvailabilityZone": params.az}
        if config.security_groups:
            request["SecurityGroupIds"] = list(config.security_groups)
        profile_name = config.iam_instance_profile_name
        if profile_name:
            request["IamInstanceProfile"] = {"Name": profile_name}
        if config.key_name:
            request["KeyName"] = config.key_name
        if params.market == Market.SPOT:
            spot: dict[str, Any] = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
            if params.max_price is not None:
                spot["MaxPrice"] = f"{params.max_price:.5f}"
            request["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
        return request

    def launch(
        self, params: LaunchParams, config: LaunchConfig, request_id: str, *, dry_run: bool = False,
        first_attempt: bool = False,
    ) -> dict[str, Any]:
        """RunInstances, exactly once per request id: an instance carrying the request id tag is reused.

        `first_attempt`: the caller knows no one has tried this request before (first delivery, never
        started), so the lookup is skipped: on an interruption notice it is a whole DescribeInstances round
        trip saved. The ClientToken still makes a repeat harmless on AWS."""
        pool = Pool(region=self.region, instance_type=params.instance_type,
                    az=params.az or config.availability_zone, market=params.market).pool_id
        existing = None if first_attempt else self.find_by_request_id(request_id)
        if existing is not None:
            logger.warning(
                "Launch %s already happened: found %s (state %s) by its request-id tag; not launching again",
                request_id, existing["InstanceId"], existing["State"]["Name"],
            )
            return {"instance_id": existing["InstanceId"], "pool": pool, "reused": True,
                    "state": existing["State"]["Name"]}
        subnet_id = self.subnet_for(config, params.az, request_id)
        request = self.build_launch_request(params, config, request_id, subnet_id)
        logger.info("AWS call: RunInstances request_id=%s pool=%s params=%s%s", request_id, pool, request,
                    " (DRY RUN: not sent)" if dry_run else "")
        if dry_run:
            return {"instance_id": None, "pool": pool, "dry_run": True, "request": request}
        with translated("RunInstances", request_id, pool):
            response = self.client.run_instances(**request)
        instance = response["Instances"][0]
        instance_id = instance["InstanceId"]
        logger.info("✓ INSTANCE LAUNCHED: %s", instance_id)
        logger.info("  Type: %s  AZ: %s  AMI: %s  Market: %s  Subnet: %s  Role: %s  Request: %s",
                    params.instance_type, instance["Placement"]["AvailabilityZone"], config.ami_id,
                    params.market.value, subnet_id, params.role.value, request_id)
        return {"instance_id": instance_id, "pool": pool, "reused": False, "state": instance["State"]["Name"],
                "az": instance["Placement"]["AvailabilityZone"]}

    def _require_managed(self, instance: dict[str, Any], action: str) -> None:
        if tags_of(instance).get(MANAGED_BY_KEY) != MANAGED_BY_VALUE:
            logger.error("REFUSED to %s %s: not tagged %s=%s", action, instance["InstanceId"], MANAGED_BY_KEY,
                         MANAGED_BY_VALUE)
            raise NotManagedError(instance["InstanceId"], action)

    def terminate(
        self, instance_id: str, reason: str, request_id: str | None = None, *, dry_run: bool = False
    ) -> dict[str, Any]:
        instance = self.describe_instance(instance_id, request_id)
        if instance is None:
            logger.info("Terminate %s: no such instance (already gone); nothing to do. reason=%s",
                        instance_id, reason)
            return {"instance_id": instance_id, "previous_state": "not-found", "noop": True}
        state = instance["State"]["Name"]
        if state in GONE_STATES:
            logger.info("Terminate %s: already %s; nothing to do. reason=%s", instance_id, state, reason)
            return {"instance_id": instance_id, "previous_state": state, "noop": True}
        self._require_managed(instance, "terminate")
        logger.warning("AWS call: TerminateInstances %s (state %s) reason=%s request_id=%s%s", instance_id, state,
                       reason, request_id, " (DRY RUN: not sent)" if dry_run else "")
        if dry_run:
            return {"instance_id": instance_id, "previous_state": state, "dry_run": True}
        with translated("TerminateInstances", request_id):
            response = self.client.terminate_instances(InstanceIds=[instance_id])
        current = response["TerminatingInstances"][0]["CurrentState"]["Name"]
        logger.warning("✓ INSTANCE TERMINATED: %s (%s -> %s) reason=%s", instance_id, state, current, reason)
        return {"instance_id": instance_id, "previous_state": state, "current_state": current, "noop": False}

    def promote(
        self, new_primary_id: str, old_primary_id: str | None, request_id: str | None = None,
        *, dry_run: bool = False,
    ) -> dict[str, Any]:
        """Tag the replica `primary` and the old primary `zombie`, with timestamps."""
        demote = old_primary_id if old_primary_id and old_primary_id != new_primary_id else None
        # One round trip for both: on an interruption notice the promotion is what the workload waits for.
        found = self.describe_some([new_primary_id, *([demote] if demote else [])], request_id)
        new = found.get(new_primary_id)
        if new is None:
            raise NotFoundError(f"instance {new_primary_id} to promote not found", operation="DescribeInstances",
                                request_id=request_id)
        if new["State"]["Name"] in GONE_STATES:
            raise InvalidRequestError(f"cannot promote {new_primary_id}: it is {new['State']['Name']}",
                                      code="InstanceGone", operation="CreateTags", request_id=request_id)
        self._require_managed(new, "promote")
        old = found.get(demote) if demote else None
        if old is not None:
            self._require_managed(old, "demote")
        now = self._clock().isoformat()
        logger.info("PROMOTE: %s -> primary, %s -> zombie at %s request_id=%s%s", new_primary_id,
                    old_primary_id, now, request_id, " (DRY RUN: not sent)" if dry_run else "")
        if dry_run:
            return {"primary": new_primary_id, "zombie": old_primary_id, "dry_run": True}
        with translated("CreateTags", request_id):
            self.client.create_tags(Resources=[new_primary_id], Tags=[
                {"Key": ROLE_TAG, "Value": Role.PRIMARY.value}, {"Key": PROMOTED_AT_TAG, "Value": now}])
            if old is not None and old_primary_id:
                self.client.create_tags(Resources=[old_primary_id], Tags=[
                    {"Key": ROLE_TAG, "Value": Role.ZOMBIE.value}, {"Key": DEMOTED_AT_TAG, "Value": now}])
        logger.info("✓ PROMOTED %s to primary; %s is now zombie", new_primary_id, old_primary_id)
        return {"primary": new_primary_id, "zombie": old_primary_id if old is not None else None,
                "promoted_at": now}
