"""The agent's EC2 operations against moto: launch configuration discovery, launch, terminate, promote,
inventory (with pagination) and error mapping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from helpers.aws_world import AZS, REGION, World, build_world, state, tags
from helpers.faults import FaultInjector
from spot_optimizer.aws.ec2 import Ec2Operations
from spot_optimizer.aws.session import AwsSettings, ec2_client
from spot_optimizer.core.commands import LaunchParams
from spot_optimizer.core.errors import AuthError, CapacityError, NotManagedError, ThrottlingError
from spot_optimizer.core.models import (
    DEMOTED_AT_TAG,
    MANAGED_BY_KEY,
    PROMOTED_AT_TAG,
    REQUEST_ID_TAG,
    ROLE_TAG,
    WORKLOAD_TAG,
    Market,
    Role,
)


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield


@pytest.fixture()
def world(aws: None) -> World:
    return build_world()


@pytest.fixture()
def ops(world: World) -> Ec2Operations:
    return Ec2Operations(ec2_client(AwsSettings(region=REGION, max_attempts=3)), REGION)


def describe(world: World, instance_id: str) -> dict[str, Any]:
    return world.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def test_launch_configuration_is_discovered_from_own_instance(world: World, ops: Ec2Operations) -> None:
    config = ops.discover_launch_config(world.own_instance_id)
    assert config.ami_id == world.ami_id
    assert config.instance_type == "m5.large"
    assert config.subnet_id == world.subnets[AZS[0]]
    assert config.vpc_id == world.vpc_id
    assert config.security_groups == [world.sg_id]
    assert config.iam_instance_profile and config.iam_instance_profile.endswith("app-profile")
    assert config.key_name == "app-key"
    assert config.tags[WORKLOAD_TAG] == "web"


def test_launch_uses_real_config_tags_and_client_token(world: World, ops: Ec2Operations) -> None:
    config = ops.discover_launch_config(world.own_instance_id)
    sent: list[dict[str, Any]] = []
    ops.client.meta.events.register("provide-client-params.ec2.RunInstances",
                                    lambda params, **_: sent.append(dict(params)))
    out = ops.launch(LaunchParams(instance_type="m5a.large", az=AZS[1], market=Market.SPOT, workload="web"),
                     config, "req-123")
    new = describe(world, out["instance_id"])
    assert new["ImageId"] == world.ami_id
    assert new["InstanceType"] == "m5a.large"
    assert new["Placement"]["AvailabilityZone"] == AZS[1]
    assert new["SubnetId"] == world.subnets[AZS[1]]  # a subnet of the same VPC in the requested AZ
    assert [g["GroupId"] for g in new["SecurityGroups"]] == [world.sg_id]
    assert new["KeyName"] == "app-key"
    assert new["IamInstanceProfile"]["Arn"].endswith("app-profile")
    assert new.get("InstanceLifecycle") == "spot"
    new_tags = tags(world.ec2, out["instance_id"])
    assert new_tags[MANAGED_BY_KEY] == "SpotOptimizer"
    assert new_tags[ROLE_TAG] == "replica"
    assert new_tags[WORKLOAD_TAG] == "web"
    assert new_tags[REQUEST_ID_TAG] == "req-123"
    assert new_tags["Name"] == "web-1"  # the parent's own tags are inherited
    assert sent[0]["ClientToken"] == "req-123"
    assert sent[0]["InstanceMarketOptions"]["MarketType"] == "spot"


def test_on_demand_launch_has_no_spot_market_options(world: World, ops: Ec2Operations) -> None:
    config = ops.discover_launch_config(world.own_instance_id)
    out = ops.launch(LaunchParams(instance_type="m5.large", market=Market.ON_DEMAND), config, "req-od")
    assert describe(world, out["instance_id"]).get("InstanceLifecycle") is None
    assert out["pool"].endswith("/on-demand")


def test_launch_twice_with_same_request_id_makes_one_instance(world: World, ops: Ec2Operations) -> None:
    config = ops.discover_launch_config(world.own_instance_id)
    first = ops.launch(LaunchParams(instance_type="m5.large", az=AZS[2]), config, "req-dup")
    second = ops.launch(LaunchParams(instance_type="m5.large", az=AZS[2]), config, "req-dup")
    assert first["instance_id"] == second["instance_id"]
    assert second["reused"] is True
    found = world.ec2.describe_instances(Filters=[{"Name": f"tag:{REQUEST_ID_TAG}", "Values": ["req-dup"]}])
    assert sum(len(r["Instances"]) for r in found["Reservations"]) == 1


def test_a_first_delivery_launches_without_a_lookup_and_a_redelivery_looks_first(
    world: World, ops: Ec2Operations, tmp_path: Any
) -> None:
    """On a notice every round trip counts: a command the server delivers for the first time, and the journal
    never started, cannot have run anywhere, so RunInstances goes out at once. Any later delivery looks for
    the request-id tag first and reuses what it finds."""
    from spot_optimizer.agent.config import AgentConfig
    from spot_optimizer.agent.executor import CommandExecutor
    from spot_optimizer.agent.journal import CommandJournal
    from spot_optimizer.aws.pricing import PriceCollector
    from spot_optimizer.core.commands import Command, CommandType

    config = AgentConfig(workload="web")
    config.set_launch_config(ops.discover_launch_config(world.own_instance_id), world.own_instance_id)
    lookups: list[dict[str, Any]] = []
    ops.client.meta.events.register("provide-client-params.ec2.DescribeInstances",
                                    lambda params, **_: lookups.append(params))

    def executor(journal: str) -> CommandExecutor:
        return CommandExecutor(ops, PriceCollector(ops.client, None, REGION), CommandJournal(tmp_path / journal),
                               lambda: config, lambda kind, payload: None)

    command = Command(command_id="req-first", type=CommandType.LAUNCH, delivery=1,
                      params={"instance_type": "m5.large", "az": AZS[1], "role": "primary"})
    first = executor("a.jsonl").execute(command)
    assert first.status.value == "succeeded" and first.result["reused"] is False
    assert lookups == []
    # The result was lost with the instance's disk: the server delivers it again to another agent.
    again = executor("b.jsonl").execute(command.model_copy(update={"delivery": 2}))
    assert again.result == {**again.result, "instance_id": first.result["instance_id"], "reused": True}
    assert len(lookups) == 1
    # A server that does not say which delivery it is gets the lookup too.
    executor("c.jsonl").execute(command.model_copy(update={"delivery": None}))
    assert len(lookups) == 2


def test_launch_dry_run_calls_nothing(world: World, ops: Ec2Operations) -> None:
    config = ops.discover_launch_config(world.own_instance_id)
    before = len(ops.inventory())
    out = ops.launch(LaunchParams(instance_type="m5.large"), config, "req-dry", dry_run=True)
    assert out["dry_run"] is True and out["instance_id"] is None
    assert out["request"]["ImageId"] == world.ami_id
    assert len(ops.inventory()) == before


def test_terminate_managed_instance(world: World, ops: Ec2Operations) -> None:
    config = ops.discover_launch_config(world.own_instance_id)
    new_id = ops.launch(LaunchParams(instance_type="m5.large"), config, "req-t")["instance_id"]
    out = ops.terminate(new_id, reason="zombie")
    assert out["noop"] is False and out["previous_state"] in ("pending", "running")
    assert state(world.ec2, new_id) in ("shutting-down", "terminated")


def test_terminate_refuses_unmanaged_instance(world: World, ops: Ec2Operations) -> None:
    with pytest.raises(NotManagedError, match="not tagged ManagedBy=SpotOptimizer"):
        ops.terminate(world.unmanaged_instance_id, reason="test")
    assert state(world.ec2, world.unmanaged_instance_id) == "running"


def test_terminate_already_terminated_is_noop(world: World, ops: Ec2Operations) -> None:
    config = ops.discover_launch_config(world.own_instance_id)
    new_id = ops.launch(LaunchParams(instance_type="m5.large"), config, "req-tt")["instance_id"]
    world.ec2.terminate_instances(InstanceIds=[new_id])
    assert ops.terminate(new_id, reason="again")["noop"] is True
    assert ops.terminate("i-0123456789abcdef0", reason="gone")["noop"] is True


def test_terminate_dry_run_leaves_instance_running(world: World, ops: Ec2Operations) -> None:
    config = ops.discover_launch_config(world.own_instance_id)
    new_id = ops.launch(LaunchParams(instance_type="m5.large"), config, "req-td")["instance_id"]
    assert ops.terminate(new_id, reason="test", dry_run=True)["dry_run"] is True
    assert state(world.ec2, new_id) == "running"


def test_promote_tags_primary_and_zombie_with_timestamps(world: World, ops: Ec2Operations) -> None:
    config = ops.discover_launch_config(world.own_instance_id)
    new_id = ops.launch(LaunchParams(instance_type="m5.large", role=Role.REPLICA), config, "req-p")["instance_id"]
    out = ops.promote(new_id, world.own_instance_id, "req-promote")
    new_tags, old_tags = tags(world.ec2, new_id), tags(world.ec2, world.own_instance_id)
    assert new_tags[ROLE_TAG] == "primary" and PROMOTED_AT_TAG in new_tags
    assert old_tags[ROLE_TAG] == "zombie" and DEMOTED_AT_TAG in old_tags
    assert out == {"primary": new_id, "zombie": world.own_instance_id, "promoted_at": new_tags[PROMOTED_AT_TAG]}


def test_promote_reads_both_instances_in_one_call_and_copes_with_a_vanished_old_primary(
    world: World, ops: Ec2Operations
) -> None:
    config = ops.discover_launch_config(world.own_instance_id)
    new_id = ops.launch(LaunchParams(instance_type="m5.large", role=Role.REPLICA), config, "req-p1")["instance_id"]
    reads: list[list[str]] = []
    ops.client.meta.events.register("provide-client-params.ec2.DescribeInstances",
                                    lambda params, **_: reads.append(list(params.get("InstanceIds", []))))
    ops.promote(new_id, world.own_instance_id, "req-promote-1")
    assert reads == [[new_id, world.own_instance_id]]
    reads.clear()
    gone = "i-0123456789abcdef0"  # the old primary is no longer known to EC2: the promotion still happens
    out = ops.promote(new_id, gone, "req-promote-2")
    assert out["primary"] == new_id and out["zombie"] is None
    assert reads[0] == [new_id, gone] and len(reads) == 3  # refused together, then asked for one by one
    assert tags(world.ec2, new_id)[ROLE_TAG] == "primary"


def test_promote_refuses_to_retag_unmanaged_instance(world: World, ops: Ec2Operations) -> None:
    with pytest.raises(NotManagedError):
        ops.promote(world.unmanaged_instance_id, world.own_instance_id)
    assert ROLE_TAG not in tags(world.ec2, world.unmanaged_instance_id)
    assert tags(world.ec2, world.own_instance_id)[ROLE_TAG] == "primary"


def test_inventory_paginates_the_whole_region(world: World, ops: Ec2Operations) -> None:
    for _ in range(12):  # moto pages by reservation: twelve reservations of two instances
        world.ec2.run_instances(ImageId=world.ami_id, InstanceType="t3.nano", MinCount=2, MaxCount=2)
    pages: list[int] = []

    def small_pages(params: dict[str, Any], **_: Any) -> None:
        params.setdefault("MaxResults", 5)

    ops.client.meta.events.register("provide-client-params.ec2.DescribeInstances", small_pages)
    ops.client.meta.events.register("after-call.ec2.DescribeInstances",
                                    lambda parsed, **_: pages.append(len(parsed.get("Reservations", []))))
    records = ops.inventory()
    assert len(records) == 26
    assert pages == [5, 5, 4]  # 14 reservations at 5 per page: really paginated
    own = next(r for r in records if r.instance_id == world.own_instance_id)
    assert own.managed and own.role == Role.PRIMARY and own.market == Market.SPOT
    assert own.pool == f"{REGION}/m5.large/{AZS[0]}/spot"
    assert own.launch_time and own.private_ip


def test_capacity_error_is_typed_with_pool_and_request_id(world: World, ops: Ec2Operations) -> None:
    config = ops.discover_launch_config(world.own_instance_id)
    FaultInjector(ops.client, "RunInstances", "InsufficientInstanceCapacity", times=10)
    with pytest.raises(CapacityError) as err:
        ops.launch(LaunchParams(instance_type="m5.large", az=AZS[1]), config, "req-cap")
    assert err.value.request_id == "req-cap"
    assert err.value.pool == f"{REGION}/m5.large/{AZS[1]}/spot"
    assert "InsufficientInstanceCapacity" in str(err.value)


def test_throttling_is_retried_adaptively_then_succeeds(world: World, ops: Ec2Operations) -> None:
    fault = FaultInjector(ops.client, "DescribeInstances", "RequestLimitExceeded", times=2, status=503)
    records = ops.inventory()
    assert fault.attempts == 3  # two throttled attempts, then the real answer
    assert len(records) == 2


def test_throttling_storm_gives_typed_error_after_bounded_retries(world: World, ops: Ec2Operations) -> None:
    fault = FaultInjector(ops.client, "DescribeInstances", "RequestLimitExceeded", times=100, status=503)
    with pytest.raises(ThrottlingError):
        ops.inventory()
    assert fault.attempts == 3  # max_attempts, never unbounded


def test_auth_error_is_typed(world: World, ops: Ec2Operations) -> None:
    FaultInjector(ops.client, "DescribeInstances", "UnauthorizedOperation", times=1, status=403)
    with pytest.raises(AuthError):
        ops.inventory()
