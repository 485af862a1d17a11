"""The emulated region end to end: moto behind the shim, validation, faults, the call log, metadata
per instance, scripted interruptions and the instance runtime."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from emulator_fixtures import imds_get

from spot_optimizer.core.models import MANAGED_BY_KEY, MANAGED_BY_VALUE, ROLE_TAG, WORKLOAD_TAG
from spot_optimizer.emulator.region import EmulatedRegion, EmulatorConfig

SPEED = 60.0  # a two-minute notice lasts 2 s
# Dumps its environment into its working dir, then idles like an agent would.
DUMMY_AGENT = [
    sys.executable,
    "-c",
    "import json, os, sys, time; json.dump([dict(os.environ), sys.argv], open('seen.json', 'w')); time.sleep(600)",
    "{instance_id}",
    "{imds}",
]


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedRegion]:
    config = EmulatorConfig(
        workloads=2,
        seed=3,
        speed=SPEED,
        run_dir=tmp_path_factory.mktemp("region"),
        agent_command=DUMMY_AGENT,
        stop_grace_s=2.0,
    )
    with EmulatedRegion(config) as emulated:
        yield emulated


def _launch(region: EmulatedRegion, az: str = "eu-west-1c", itype: str = "m5.large", spot: bool = True, **kw) -> str:  # noqa: ANN003
    ec2 = region.client("ec2")
    args = {
        "ImageId": region.seed.ami_id,
        "InstanceType": itype,
        "MinCount": 1,
        "MaxCount": 1,
        "SubnetId": region.seed.subnets[az],
        "KeyName": region.seed.key_name,
        **kw,
    }
    if spot:
        args["InstanceMarketOptions"] = {"MarketType": "spot"}
    return str(ec2.run_instances(**args)["Instances"][0]["InstanceId"])


def _control(region: EmulatedRegion, method: str, path: str, body: object | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(region.endpoint_url + path, data=data, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_seed_creates_network_iam_and_tagged_spot_primaries(region: EmulatedRegion) -> None:
    ec2 = region.client("ec2")
    assert (
        len({s["AvailabilityZone"] for s in ec2.describe_subnets()["Subnets"] if s["VpcId"] == region.seed.vpc_id}) == 3
    )
    iam = region.client("iam")
    assert iam.get_instance_profile(InstanceProfileName=region.seed.instance_profile_name)["InstanceProfile"]["Roles"]
    assert ec2.describe_key_pairs(KeyNames=[region.seed.key_name])["KeyPairs"]
    found = ec2.describe_instances(Filters=[{"Name": f"tag:{ROLE_TAG}", "Values": ["primary"]}])["Reservations"]
    primaries = [i for r in found for i in r["Instances"]]
    assert {i["InstanceId"] for i in primaries} == set(region.seed.primaries.values())
    for inst in primaries:
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags[MANAGED_BY_KEY] == MANAGED_BY_VALUE
        assert tags[WORKLOAD_TAG] in region.seed.primaries
        assert inst["InstanceLifecycle"] == "spot"
        assert inst["IamInstanceProfile"]["Arn"] == region.seed.instance_profile_arn


def test_validation_rejects_unknown_ami_type_and_key(region: EmulatedRegion) -> None:
    ec2 = region.client("ec2")
    base = {"MinCount": 1, "MaxCount": 1, "SubnetId": region.seed.subnets["eu-west-1a"]}
    cases = [
        ({"ImageId": "ami-0000000000bad0000", "InstanceType": "m5.large"}, "InvalidAMIID.NotFound"),
        ({"ImageId": region.seed.ami_id, "InstanceType": "m5.gigantic"}, "InvalidInstanceType.NotFound"),
        ({"ImageId": region.seed.ami_id, "InstanceType": "m5.large", "KeyName": "nope"}, "InvalidKeyPair.NotFound"),
    ]
    for args, code in cases:
        with pytest.raises(ClientError) as err:
            ec2.run_instances(**base, **args)
        assert err.value.response["Error"]["Code"] == code


def test_metadata_serves_moto_facts_per_instance(region: EmulatedRegion) -> None:
    reservations = region.moto_client("ec2").describe_instances(InstanceIds=list(region.seed.primaries.values()))
    urls = set()
    for inst in (i for r in reservations["Reservations"] for i in r["Instances"]):
        url = region.imds_url(inst["InstanceId"])
        assert url is not None and url.startswith("http://127.0.0.1:")
        urls.add(url)
        md = "/latest/meta-data/"
        assert imds_get(url, md + "instance-id") == (200, inst["InstanceId"])
        assert imds_get(url, md + "instance-type") == (200, inst["InstanceType"])
        assert imds_get(url, md + "placement/availability-zone") == (200, inst["Placement"]["AvailabilityZone"])
        assert imds_get(url, md + "ami-id") == (200, inst["ImageId"])
        assert imds_get(url, md + "local-ipv4") == (200, inst["PrivateIpAddress"])
        assert imds_get(url, md + "instance-life-cycle") == (200, "spot")
        assert imds_get(url, md + "spot/instance-action")[0] == 404
        assert imds_get(url, md + "instance-id", token=False)[0] == 401  # IMDSv2 only
    assert len(urls) == 2  # one service per instance


def test_capacity_fault_for_one_pool(region: EmulatedRegion) -> None:
    fault_id = region.faults.insufficient_capacity("c5.large", "eu-west-1b")
    try:
        with pytest.raises(ClientError) as err:
            _launch(region, az="eu-west-1b", itype="c5.large")
        assert err.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
        other_pool = _launch(region, az="eu-west-1a", itype="c5.large")  # another AZ still has capacity
        region.client("ec2").terminate_instances(InstanceIds=[other_pool])
    finally:
        region.faults.remove(fault_id)
    calls = region.calls.list(action="RunInstances")
    failed = [c for c in calls if c.error_code == "InsufficientInstanceCapacity"]
    assert failed and failed[-1].params["InstanceType"] == "c5.large"
    assert failed[-1].iam_action == "ec2:RunInstances"


def test_throttling_and_slowness_through_the_control_api(region: EmulatedRegion) -> None:
    ids = _control(
        region,
        "POST",
        "/_emulator/faults",
        [
            {"error_code": "RequestLimitExceeded", "actions": ["DescribeInstances"], "count": 1},
            {"delay_s": 0.3, "actions": ["DescribeVpcs"], "count": 1},
        ],
    )["fault_ids"]
    assert len(ids) == 2
    ec2 = region.client("ec2")
    with pytest.raises(ClientError) as err:
        ec2.describe_instances()
    assert err.value.response["Error"]["Code"] == "RequestLimitExceeded"
    ec2.describe_instances()  # the fault was for one call only
    ec2.describe_vpcs()
    slow = region.calls.list(action="DescribeVpcs")
    assert slow[-1].duration_ms >= 300
    listed = _control(region, "GET", "/_emulator/calls?action=DescribeInstances")["calls"]
    assert [c["error_code"] for c in listed[-2:]] == ["RequestLimitExceeded", None]
    assert _control(region, "GET", "/_emulator/faults")["faults"] == []


def test_scripted_interruption_notice_then_termination(region: EmulatedRegion) -> None:
    iid = _launch(region, az="eu-west-1a")
    region.wait_until(lambda: region.instances().get(iid) and region.imds_url(iid), 15)
    url = region.imds_url(iid)
    assert url is not None
    _control(region, "POST", "/_emulator/rebalance", {"instance_id": iid})
    region.interrupt(iid)
    status, body = region.wait_until(
        lambda: (r := imds_get(url, "/latest/meta-data/spot/instance-action"))[0] == 200 and r, 15
    )
    notice = json.loads(body)
    assert notice["action"] == "terminate"
    action_time = datetime.strptime(notice["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert (action_time - datetime.now(UTC)).total_seconds() <= 120 / SPEED + 1  # scaled by the speed factor
    assert imds_get(url, "/latest/meta-data/events/recommendations/rebalance")[0] == 200
    region.wait_until(lambda: region.instance_state(iid) == "terminated", 30)
    proc = region.wait_until(lambda: (p := region.runtime.get(iid)) and p.ended_at and p, 30)
    assert not proc.running


def test_scheduled_event_visible(region: EmulatedRegion) -> None:
    iid = region.seed.primaries["workload-2"]
    region.scheduled_event(iid, code="system-reboot")
    url = region.imds_url(iid)
    assert url is not None
    events = region.wait_until(
        lambda: json.loads(imds_get(url, "/latest/meta-data/events/maintenance/scheduled")[1]), 15
    )
    assert events[0]["Code"] == "system-reboot" and events[0]["State"] == "active"


def test_runtime_runs_a_process_per_running_instance(region: EmulatedRegion) -> None:
    iid = _launch(region, az="eu-west-1b", spot=False)
    proc = region.wait_until(lambda: region.runtime.get(iid), 15)
    seen_file = Path(region.run_dir) / "instances" / iid / "seen.json"
    env, argv = region.wait_until(lambda: seen_file.exists() and json.loads(seen_file.read_text() or "null"), 15)
    assert env["AWS_ENDPOINT_URL"] == region.endpoint_url
    assert env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] == region.imds_url(iid)
    assert env["AWS_ACCESS_KEY_ID"] == "testing" and env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert argv[1:] == [iid, region.imds_url(iid)]
    assert imds_get(region.imds_url(iid), "/latest/meta-data/instance-life-cycle") == (200, "on-demand")
    region.client("ec2").terminate_instances(InstanceIds=[iid])
    region.wait_until(lambda: proc.ended_at, 30)
    assert proc.returncode is not None and not proc.running
    # every seeded primary still has its process
    assert all(
        region.runtime.get(i).running for i in region.seed.primaries.values() if region.instance_state(i) == "running"
    )


def test_agent_crash_and_restart(region: EmulatedRegion) -> None:
    iid = region.seed.primaries["workload-2"]
    first = region.wait_until(lambda: region.runtime.get(iid), 15)
    assert region.kill_agent(iid)
    assert not first.running and first.returncode == -9
    assert region.instance_state(iid) == "running"  # the instance outlives its agent
    _control(region, "POST", "/_emulator/agents/restart", {"instance_id": iid})
    second = region.runtime.get(iid)
    assert second is not first and second.running
