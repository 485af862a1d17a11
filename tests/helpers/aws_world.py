"""A small AWS world in moto: a VPC with subnets in three AZs, a security group, an instance profile, a key
pair, and one managed primary instance (the agent's own) plus one unmanaged instance that must never be
touched."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3

from spot_optimizer.core.models import MANAGED_BY_KEY, MANAGED_BY_VALUE, ROLE_TAG, WORKLOAD_TAG

REGION = "eu-west-1"
AZS = ("eu-west-1a", "eu-west-1b", "eu-west-1c")
DEFAULT_AMI = "ami-03cf127a"  # one of moto's built-in Amazon AMIs (listing them all takes seconds)


@dataclass
class World:
    ec2: Any
    vpc_id: str
    subnets: dict[str, str]
    sg_id: str
    profile_arn: str
    key_name: str
    ami_id: str
    own_instance_id: str
    unmanaged_instance_id: str
    extra: dict[str, Any] = field(default_factory=dict)


def build_world(endpoint_url: str | None = None, workload: str = "web") -> World:
    kwargs: dict[str, Any] = {"region_name": REGION}
    if endpoint_url:
        kwargs.update(endpoint_url=endpoint_url, aws_access_key_id="testing", aws_secret_access_key="testing")
    ec2 = boto3.client("ec2", **kwargs)
    iam = boto3.client("iam", **{**kwargs, "region_name": "us-east-1"})
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = {}
    for i, az in enumerate(AZS):
        subnets[az] = ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=az)["Subnet"][
            "SubnetId"]
    sg_id = ec2.create_security_group(GroupName="app", Description="app", VpcId=vpc_id)["GroupId"]
    iam.create_role(RoleName="app-role", AssumeRolePolicyDocument="{}")
    profile = iam.create_instance_profile(InstanceProfileName="app-profile")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="app-profile", RoleName="app-role")
    ec2.create_key_pair(KeyName="app-key")
    ami_id = ec2.describe_images(ImageIds=[DEFAULT_AMI])["Images"][0]["ImageId"]
    own = ec2.run_instances(
        ImageId=ami_id, InstanceType="m5.large", MinCount=1, MaxCount=1, SubnetId=subnets[AZS[0]],
        SecurityGroupIds=[sg_id], IamInstanceProfile={"Name": "app-profile"}, KeyName="app-key",
        InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}},
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": MANAGED_BY_KEY, "Value": MANAGED_BY_VALUE}, {"Key": ROLE_TAG, "Value": "primary"},
            {"Key": WORKLOAD_TAG, "Value": workload}, {"Key": "Name", "Value": "web-1"}]}],
    )["Instances"][0]["InstanceId"]
    unmanaged = ec2.run_instances(
        ImageId=ami_id, InstanceType="t3.micro", MinCount=1, MaxCount=1, SubnetId=subnets[AZS[1]],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "someone-elses"}]}],
    )["Instances"][0]["InstanceId"]
    return World(ec2=ec2, vpc_id=vpc_id, subnets=subnets, sg_id=sg_id, profile_arn=profile["Arn"],
                 key_name="app-key", ami_id=ami_id, own_instance_id=own, unmanaged_instance_id=unmanaged)


def tags(ec2: Any, instance_id: str) -> dict[str, str]:
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def state(ec2: Any, instance_id: str) -> str:
    return str(ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"])
