"""The seed's "Testing Checklist", one test per item, on the emulated region with a real server process
and real agent processes (the agent of each running emulated instance)."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from spot_optimizer.core.models import DEMOTED_AT_TAG, MANAGED_BY_KEY, PROMOTED_AT_TAG, REQUEST_ID_TAG, ROLE_TAG
from spot_optimizer.demo.stack import LocalStack, wait_for

pytestmark = pytest.mark.e2e


def primary_id(e2e: LocalStack) -> str:
    return str(next(iter(e2e.region.seed.primaries.values())))


def primary_agent(e2e: LocalStack) -> dict[str, Any]:
    return e2e.wait_agent(primary_id(e2e))


def agent_dir(e2e: LocalStack, instance_id: str) -> Path:
    return e2e.region.run_dir / "instances" / instance_id


def agent_log(e2e: LocalStack, instance_id: str) -> str:
    return e2e.agent_log(instance_id)


LAUNCHED: dict[str, dict[str, Any]] = {}


def launched(e2e: LocalStack, market: str) -> dict[str, Any]:
    """One launch per market for the whole module (a launch is slow: do it once, check it many times)."""
    if market not in LAUNCHED:
        agent = primary_agent(e2e)
        other_az = next(az for az in e2e.region.seed.subnets if az != e2e.describe(primary_id(e2e))["Placement"][
            "AvailabilityZone"])
        cmd = e2e.op.command(agent["agent_id"], "launch", instance_type="m5.large", az=other_az, market=market)
        LAUNCHED[market] = e2e.wait_command(cmd["command_id"])
        LAUNCHED[market]["az"] = other_az
    return LAUNCHED[market]


def test_launch_real_ec2_instances_spot_and_on_demand(e2e: LocalStack) -> None:
    spot, ondemand = launched(e2e, "spot"), launched(e2e, "on-demand")
    assert spot["status"] == ondemand["status"] == "succeeded", (spot, ondemand)
    assert e2e.describe(spot["result"]["instance_id"]).get("InstanceLifecycle") == "spot"
    assert e2e.describe(ondemand["result"]["instance_id"]).get("InstanceLifecycle") is None
    # exactly one instance per command, found by its request-id tag
    ec2 = e2e.region.moto_client("ec2")
    for cmd in (spot, ondemand):
        found = ec2.describe_instances(Filters=[{"Name": f"tag:{REQUEST_ID_TAG}", "Values": [cmd["command_id"]]}])
        assert sum(len(r["Instances"]) for r in found["Reservations"]) == 1


def test_use_correct_ami_from_current_instance(e2e: LocalStack) -> None:
    new = e2e.describe(launched(e2e, "spot")["result"]["instance_id"])
    assert new["ImageId"] == e2e.describe(primary_id(e2e))["ImageId"] == e2e.region.seed.ami_id
    config = json.loads((agent_dir(e2e, primary_id(e2e)) / "spot_optimizer_config.json").read_text())
    assert config["current_instance_ami"] == e2e.region.seed.ami_id


def test_apply_security_groups_subnets_iam_roles(e2e: LocalStack) -> None:
    result = launched(e2e, "spot")
    new, parent = e2e.describe(result["result"]["instance_id"]), e2e.describe(primary_id(e2e))
    assert [g["GroupId"] for g in new["SecurityGroups"]] == [g["GroupId"] for g in parent["SecurityGroups"]]
    assert new["SubnetId"] == e2e.region.seed.subnets[result["az"]]  # same VPC, the requested AZ
    assert new["VpcId"] == parent["VpcId"]
    assert new["IamInstanceProfile"]["Arn"] == parent["IamInstanceProfile"]["Arn"]
    assert new["KeyName"] == parent["KeyName"] == e2e.region.seed.key_name


def test_terminate_instances(e2e: LocalStack) -> None:
    target = launched(e2e, "on-demand")["result"]["instance_id"]
    cmd = e2e.op.command(primary_agent(e2e)["agent_id"], "terminate", instance_id=target, reason="checklist")
    done = e2e.wait_command(cmd["command_id"])
    assert done["status"] == "succeeded" and done["result"]["noop"] is False
    wait_for("terminated in EC2", lambda: e2e.region.instance_state(target) == "terminated")
    # an instance the workload does not manage is refused before any agent sees the command
    ec2 = e2e.region.moto_client("ec2")
    foreign = ec2.run_instances(ImageId=e2e.region.seed.ami_id, InstanceType="t3.micro", MinCount=1,
                                MaxCount=1)["Instances"][0]["InstanceId"]
    refused = e2e.op.http.post("/commands", json={"agent_id": primary_agent(e2e)["agent_id"], "type": "terminate",
                                                  "params": {"instance_id": foreign}})
    assert 400 <= refused.status_code < 500
    assert e2e.region.instance_state(foreign) == "running"


def test_promote_replicas_with_proper_tagging(e2e: LocalStack) -> None:
    replica = launched(e2e, "spot")["result"]["instance_id"]
    old = primary_id(e2e)
    cmd = e2e.op.command(primary_agent(e2e)["agent_id"], "promote", instance_id=replica, old_instance_id=old)
    assert e2e.wait_command(cmd["command_id"])["status"] == "succeeded"
    new_tags, old_tags = e2e.tags(replica), e2e.tags(old)
    assert new_tags[ROLE_TAG] == "primary" and PROMOTED_AT_TAG in new_tags
    assert old_tags[ROLE_TAG] == "zombie" and DEMOTED_AT_TAG in old_tags
    assert new_tags[MANAGED_BY_KEY] == old_tags[MANAGED_BY_KEY] == "SpotOptimizer"
    # put the roles back for the tests that follow
    back = e2e.op.command(primary_agent(e2e)["agent_id"], "promote", instance_id=old, old_instance_id=replica)
    assert e2e.wait_command(back["command_id"])["status"] == "succeeded"


def collected_prices(e2e: LocalStack) -> dict[str, Any]:
    cmd = e2e.op.command(primary_agent(e2e)["agent_id"], "collect_prices", instance_types=["m5.large", "c5.large"])
    assert e2e.wait_command(cmd["command_id"])["status"] == "succeeded"
    return dict(wait_for("prices stored", lambda: (p := e2e.op.get("/prices")) and p["spot"] and p["ondemand"] and p))


def test_collect_real_spot_prices_from_aws(e2e: LocalStack) -> None:
    prices = collected_prices(e2e)
    pools = {(p["instance_type"], p["az"]) for p in prices["spot"]}
    assert {("m5.large", az) for az in e2e.region.seed.subnets} <= pools
    assert all(0 < p["price"] < 1 for p in prices["spot"])
    assert e2e.region.calls.list(action="DescribeSpotPriceHistory")


def test_get_real_on_demand_prices_from_pricing_api(e2e: LocalStack) -> None:
    prices = collected_prices(e2e)
    m5 = next(p for p in prices["ondemand"] if p["instance_type"] == "m5.large")
    assert m5["price"] == pytest.approx(e2e.region.shim.ondemand.get("m5.large").price)
    assert m5["estimated"] is False
    assert e2e.region.calls.list(action="GetProducts")


def test_cache_pricing_data(e2e: LocalStack) -> None:
    collected_prices(e2e)
    before = len(e2e.region.calls.list(action="GetProducts"))
    collected_prices(e2e)
    assert len(e2e.region.calls.list(action="GetProducts")) == before  # answered from the cache
    cache_file = agent_dir(e2e, primary_id(e2e)) / "spot_optimizer_config.state" / "prices_cache.json"
    assert "eu-west-1/m5.large" in json.loads(cache_file.read_text())["ondemand"]


def test_track_all_instance_states(e2e: LocalStack) -> None:
    launched(e2e, "spot")
    cmd = e2e.op.command(primary_agent(e2e)["agent_id"], "collect_inventory")
    assert e2e.wait_command(cmd["command_id"])["status"] == "succeeded"
    ec2 = e2e.region.moto_client("ec2")
    truth = {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"]
             for i in r["Instances"]}
    seen = wait_for("inventory stored", lambda: {i["instance_id"]: i["state"] for i in e2e.op.get("/instances")}
                    if len(e2e.op.get("/instances")) >= len(truth) else None)
    for instance_id, state in truth.items():
        assert seen.get(instance_id) == state, instance_id


def test_detect_spot_interruption_notices(e2e: LocalStack) -> None:
    victim = launched(e2e, "spot")["result"]["instance_id"]
    wait_for("the replica's own agent is online", lambda: e2e.agent_for(victim), timeout_s=60)
    e2e.region.interrupt(victim, in_s=0, notice_s=30)
    wait_for("notice detected by the replica's agent",
             lambda: "NOTICE DETECTED: interruption" in agent_log(e2e, victim), timeout_s=20)


def test_send_notices_to_backend(e2e: LocalStack) -> None:
    victim = launched(e2e, "spot")["result"]["instance_id"]
    notices = wait_for("notice at the server", lambda: [n for n in e2e.op.get("/notices")
                                                         if n["instance_id"] == victim], timeout_s=30)
    assert notices[0]["kind"] == "interruption" and notices[0]["payload"]["action"] == "terminate"


def test_log_everything_comprehensively(e2e: LocalStack) -> None:
    text = agent_log(e2e, primary_id(e2e))
    line = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - [\w.]+ - \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] - "
                      r"\[\w+:\d+\] - ")
    assert all(line.match(x) for x in text.splitlines() if x and not x.startswith((" ", "Traceback", "{", "}")))
    for expected in ("starting", "Instance metadata:", "AWS connectivity test", "Launch configuration of",
                     "REGISTERED as agent", "HEARTBEAT sent", "COMMAND RECEIVED", "EXECUTING COMMAND", "Parameters:",
                     "INSTANCE LAUNCHED", "INSTANCE TERMINATED", "PROMOTED", "spot price", "on-demand",
                     "Inventory collected", "STATE TRANSITION", "Config saved"):
        assert expected in text, expected
    assert e2e.enrollment_token not in text  # the enrollment token never reaches a log


def test_persist_configuration(e2e: LocalStack) -> None:
    path = agent_dir(e2e, primary_id(e2e)) / "spot_optimizer_config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = json.loads(path.read_text())
    for key in ("agent_id", "auto_switching", "auto_terminate", "manual_replica", "emergency_only",
                "current_instance_ami", "current_security_groups", "current_subnet_id",
                "current_iam_instance_profile", "current_key_name", "last_updated", "schema_version"):
        assert key in config
    assert config["agent_id"] == primary_agent(e2e)["agent_id"]


def test_reconnect_after_restart(e2e: LocalStack) -> None:
    before = primary_agent(e2e)["agent_id"]
    count = len(e2e.agents())
    assert e2e.region.kill_agent(primary_id(e2e))
    e2e.region.restart_agent(primary_id(e2e))
    wait_for("reconnected", lambda: agent_log(e2e, primary_id(e2e)).count(f"RECONNECTED as agent {before}") >= 1)
    assert primary_agent(e2e)["agent_id"] == before
    assert len(e2e.agents()) == count  # no second registration


def test_handle_aws_api_errors_properly(e2e: LocalStack) -> None:
    agent = primary_agent(e2e)
    e2e.region.faults.insufficient_capacity("c5.large", "eu-west-1c")
    cmd = e2e.op.command(agent["agent_id"], "launch", instance_type="c5.large", az="eu-west-1c", market="spot")
    done = e2e.wait_command(cmd["command_id"])
    assert done["status"] == "failed"
    assert "InsufficientInstanceCapacity" in json.dumps(done)
    assert "eu-west-1/c5.large/eu-west-1c/spot" in json.dumps(done)
    assert primary_agent(e2e)["state"] == "ONLINE_READY"  # the agent carries on


def test_a_slow_inventory_does_not_hold_up_a_launch(e2e: LocalStack) -> None:
    """Collections only read and run beside the agent's main loop: a launch (or a notice) that arrives while
    an inventory crawls through a slow DescribeInstances goes ahead at once, not after it."""
    agent_id = primary_agent(e2e)["agent_id"]
    slow = e2e.region.faults.slow(6.0, actions=["DescribeInstances"])
    try:
        inventory = e2e.op.command(agent_id, "collect_inventory")
        wait_for("inventory under way", lambda: e2e.op.get(f"/commands/{inventory['command_id']}")["status"]
                 == "delivered", timeout_s=30, every_s=0.05)
        launch = e2e.op.command(agent_id, "launch", instance_type="m5.large", az="eu-west-1b", market="spot")
        launched_ = e2e.wait_command(launch["command_id"])
    finally:
        e2e.region.faults.remove(slow)
    listed = e2e.wait_command(inventory["command_id"])
    assert launched_["status"] == listed["status"] == "succeeded"
    assert launched_["finished_at"] < listed["finished_at"]


def test_report_command_results_to_backend(e2e: LocalStack) -> None:
    commands = e2e.op.get("/commands")
    assert commands
    mine = [c for c in commands if c["status"] not in ("pending", "delivered")]
    assert all(c["result"] is not None or c["status"] == "failed" for c in mine)
    assert {c["status"] for c in commands} <= {"succeeded", "failed", "pending", "delivered"}


def test_last_known_policy_reaches_the_agent_config(e2e: LocalStack) -> None:
    """What the agent would use to act alone if the server went away: the workload's allowed pools."""
    collected_prices(e2e)  # prices in every AZ make every AZ an allowed default
    path = agent_dir(e2e, primary_id(e2e)) / "spot_optimizer_config.json"
    azs = sorted(e2e.region.seed.subnets)
    policy = wait_for("policy persisted by the agent", lambda: (p := json.loads(path.read_text())["policy"])
                      and sorted(p["availability_zones"]) == azs and p, timeout_s=40)
    assert policy["instance_types"] == ["m5.large"] and policy["allow_on_demand"] is True
