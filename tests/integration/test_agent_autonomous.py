"""The agent acting alone on an interruption notice (server unreachable), against moto: it launches a
replacement from its last known policy, or promotes a successor that already exists instead of
launching a second one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from helpers.aws_world import AZS, REGION, World, build_world, tags
from spot_optimizer.agent.autonomous import act_alone
from spot_optimizer.agent.config import AgentConfig
from spot_optimizer.agent.executor import CommandExecutor
from spot_optimizer.agent.journal import CommandJournal
from spot_optimizer.aws.ec2 import Ec2Operations
from spot_optimizer.aws.pricing import PriceCollector
from spot_optimizer.aws.session import AwsSettings, ec2_client
from spot_optimizer.core.models import MANAGED_BY_KEY, ROLE_TAG, WORKLOAD_TAG, Notice, NoticeKind


@pytest.fixture()
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield build_world()


def setup(world: World, tmp_path: Path) -> tuple[AgentConfig, CommandExecutor, list[tuple[str, dict[str, Any]]]]:
    client = ec2_client(AwsSettings(region=REGION, max_attempts=2))
    ops = Ec2Operations(client, REGION)
    config = AgentConfig(workload="web")
    config.set_launch_config(ops.discover_launch_config(world.own_instance_id), world.own_instance_id)
    config.policy.instance_types = ["m5.large"]
    config.policy.availability_zones = list(AZS)
    sent: list[tuple[str, dict[str, Any]]] = []
    executor = CommandExecutor(ops, PriceCollector(client, None, REGION), CommandJournal(tmp_path / "j.jsonl"),
                               lambda: config, lambda kind, payload: sent.append((kind, payload)))
    return config, executor, sent


def notice(world: World) -> Notice:
    payload = {"action": "terminate", "time": "2026-01-01T12:02:00Z"}
    return Notice(notice_id=Notice.make_id(NoticeKind.INTERRUPTION, world.own_instance_id, payload),
                  kind=NoticeKind.INTERRUPTION, instance_id=world.own_instance_id, payload=payload,
                  detected_at=datetime.now(UTC))


def live_in_workload(world: World) -> list[str]:
    found = world.ec2.describe_instances(Filters=[
        {"Name": f"tag:{WORKLOAD_TAG}", "Values": ["web"]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return sorted(i["InstanceId"] for r in found["Reservations"] for i in r["Instances"])


def test_alone_it_launches_in_another_az_and_promotes(world: World, tmp_path: Path) -> None:
    config, executor, sent = setup(world, tmp_path)
    new_id = act_alone(notice(world), config, executor)
    assert new_id is not None and new_id != world.own_instance_id
    assert world.ec2.describe_instances(InstanceIds=[new_id])["Reservations"][0]["Instances"][0][
        "Placement"]["AvailabilityZone"] != AZS[0]  # not the pool being interrupted
    assert tags(world.ec2, new_id)[ROLE_TAG] == "primary"
    assert tags(world.ec2, world.own_instance_id)[ROLE_TAG] == "zombie"
    results = [p for k, p in sent if k == "result"]
    assert [r["command"]["type"] for r in results] == ["launch", "promote"]
    assert all(r["autonomous"] for r in results)  # the server learns what happened when it returns


def test_alone_it_promotes_a_successor_that_already_exists(world: World, tmp_path: Path) -> None:
    """The server launched a replacement, then went away: the agent must not launch a second one."""
    config, executor, _ = setup(world, tmp_path)
    successor = world.ec2.run_instances(
        ImageId=world.ami_id, InstanceType="m5.large", MinCount=1, MaxCount=1, SubnetId=world.subnets[AZS[1]],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": MANAGED_BY_KEY, "Value": "SpotOptimizer"}, {"Key": ROLE_TAG, "Value": "primary"},
            {"Key": WORKLOAD_TAG, "Value": "web"}]}])["Instances"][0]["InstanceId"]
    before = live_in_workload(world)
    assert act_alone(notice(world), config, executor) == successor
    assert live_in_workload(world) == before  # nothing launched
    assert tags(world.ec2, world.own_instance_id)[ROLE_TAG] == "zombie"
    assert tags(world.ec2, successor)[ROLE_TAG] == "primary"
