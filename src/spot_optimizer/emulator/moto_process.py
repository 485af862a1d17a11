"""moto in server mode as a child process on loopback, with AMI, key-pair and instance-type
validation switched on, and the region's seed resources (network, IAM, key pair, primaries)."""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import moto
from botocore.config import Config

from spot_optimizer.core.models import MANAGED_BY_KEY, MANAGED_BY_VALUE, ROLE_TAG, WORKLOAD_TAG, Role

logger = logging.getLogger(__name__)

VALIDATION_ENV = {
    "MOTO_ENABLE_AMI_VALIDATION": "true",
    "MOTO_ENABLE_KEYPAIR_VALIDATION": "true",
    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
}
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class MotoProcess:
    """`python -m moto.server` in its own process group (its state never mixes with in-process mocks)."""

    def __init__(self, port: int = 0, log_path: Path | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> MotoProcess:
        env = {**os.environ, **VALIDATION_ENV}
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._proc.returncode} (log: {self.log_path})")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.url} within {timeout_s} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        self._log = None

    def client(self, service: str, region: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service,
            region_name=region,
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 2, "mode": "standard"}),
        )


@dataclass
class SeedResources:
    region: str
    ami_id: str
    vpc_id: str
    subnets: dict[str, str]  # AZ -> subnet id
    security_group_id: str
    key_name: str
    role_name: str
    instance_profile_name: str
    instance_profile_arn: str
    primaries: dict[str, str] = field(default_factory=dict)  # workload -> instance id

    def to_dict(self) -> dict[str, Any]:
        return dict(json.loads(json.dumps(self.__dict__)))


def pick_ami(ec2: Any, region: str) -> str:
    """An Amazon Linux 2 x86_64 image moto knows in this region (validation rejects unknown ids).

    Read from moto's bundled list of the region's latest AMIs (filtering DescribeImages is slow)."""
    resource = Path(moto.__file__).parent / "ec2" / "resources" / "latest_amis" / f"{region}.json.gz"
    candidates: list[str] = []
    if resource.exists():
        with gzip.open(resource, "rt") as fh:
            amis = json.load(fh)
        candidates = sorted(
            a["ami_id"] for a in amis if a.get("architecture") == "x86_64" and a.get("name", "").startswith("amzn2-ami")
        )
    for ami_id in candidates:
        if ec2.describe_images(ImageIds=[ami_id])["Images"]:
            return ami_id
    images = ec2.describe_images(Owners=["amazon"])["Images"]
    return str(sorted(images, key=lambda i: i["ImageId"])[0]["ImageId"])


def seed_region(
    moto: MotoProcess, region: str, workloads: int, instance_types: list[str], name: str = "spot-optimizer"
) -> SeedResources:
    ec2 = moto.client("ec2", region)
    iam = moto.client("iam", region)
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]][:3]
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.create_tags(Resources=[vpc_id], Tags=[{"Key": "Name", "Value": f"{name}-emulated"}])
    subnets = {
        az: ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]
        for i, az in enumerate(zones)
    }
    sg_id = ec2.create_security_group(GroupName=f"{name}-emulated", Description="emulated workloads", VpcId=vpc_id)[
        "GroupId"
    ]
    key_name = f"{name}-emulated"
    ec2.create_key_pair(KeyName=key_name)
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    role_name = f"{name}-agent"
    iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))
    profile = iam.create_instance_profile(InstanceProfileName=role_name)["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName=role_name, RoleName=role_name)
    res = SeedResources(
        region, pick_ami(ec2, region), vpc_id, subnets, sg_id, key_name, role_name, role_name, profile["Arn"]
    )
    for i in range(workloads):
        workload = f"workload-{i + 1}"
        az = zones[i % len(zones)]
        res.primaries[workload] = launch(
            moto, res, instance_types[i % len(instance_types)], az, workload, Role.PRIMARY, spot=True
        )
    return res


def launch(
    moto: MotoProcess, res: SeedResources, instance_type: str, az: str, workload: str, role: Role, spot: bool = True
) -> str:
    """Start one managed instance directly in moto (not through the shim: seeds are not agent calls)."""
    ec2 = moto.client("ec2", res.region)
    tags = [
        {"Key": MANAGED_BY_KEY, "Value": MANAGED_BY_VALUE},
        {"Key": ROLE_TAG, "Value": role.value},
        {"Key": WORKLOAD_TAG, "Value": workload},
        {"Key": "Name", "Value": f"{workload}-{role.value}"},
    ]
    kwargs: dict[str, Any] = {
        "ImageId": res.ami_id,
        "InstanceType": instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "KeyName": res.key_name,
        "SubnetId": res.subnets[az],
        "SecurityGroupIds": [res.security_group_id],
        "IamInstanceProfile": {"Arn": res.instance_profile_arn},
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
    }
    if spot:
        kwargs["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}}
    return str(ec2.run_instances(**kwargs)["Instances"][0]["InstanceId"])
