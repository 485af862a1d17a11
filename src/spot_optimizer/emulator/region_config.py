"""The emulated region's settings and what it knows about each instance."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from spot_optimizer.emulator.imds import MetadataServer, MetadataState
from spot_optimizer.emulator.runtime import CommandTemplate

ACTIVE = ("pending", "running")


@dataclass
class EmulatorConfig:
    region: str = "eu-west-1"
    workloads: int = 1
    seed: int = 0
    prices: Path | None = None  # spot price trace CSV(.gz); None = seeded synthetic market
    ondemand: Path | None = None  # on-demand CSV; None = built-in synthetic list prices
    advisor: Path | None = None  # Spot Advisor JSON, for auto interruptions
    speed: float = 1.0
    port: int = 0  # the shim's port (0 = any free one)
    moto_port: int = 0
    server_url: str | None = None  # with a server, every running instance gets an agent
    enrollment_token: str = ""
    agent_command: CommandTemplate | None = None  # overrides the default agent command (and enables it)
    agent_env: dict[str, str] = field(default_factory=dict)
    run_dir: Path | None = None
    instance_types: list[str] = field(default_factory=lambda: ["m5.large", "c5.large", "r5.large"])
    trace_start: datetime | None = None  # trace time at start; default: a week into the trace
    trace_types: list[str] | None = None  # load only these types from the trace (faster)
    poll_interval_s: float = 0.2  # real seconds between looks at moto
    boot_s: float = 0.0  # emulated seconds from `running` to the agent's start
    stop_grace_s: float = 5.0
    notice_s: float = 120.0  # emulated length of an interruption notice
    auto_interruptions: bool = False  # draw interruptions from the Spot Advisor (needs `advisor`)
    interruption_rate_multiplier: float = 1.0


@dataclass
class EmulatedInstance:
    instance_id: str
    instance_type: str
    availability_zone: str
    lifecycle: str
    state: str
    tags: dict[str, str]
    metadata: MetadataState
    imds: MetadataServer | None
    first_running_wall: float | None = None

    @property
    def imds_url(self) -> str | None:
        return self.imds.url if self.imds else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "instance_type": self.instance_type,
            "availability_zone": self.availability_zone,
            "lifecycle": self.lifecycle,
            "state": self.state,
            "tags": self.tags,
            "imds_url": self.imds_url,
        }


def metadata_for(raw: dict[str, Any], region: str) -> MetadataState:
    """What the metadata service of the instance `raw` (a DescribeInstances item from moto) serves."""
    extra = {
        "hostname": raw.get("PrivateDnsName") or "",
        "local-hostname": raw.get("PrivateDnsName") or "",
        "security-groups": "\n".join(g["GroupName"] for g in raw.get("SecurityGroups", [])),
    }
    profile = raw.get("IamInstanceProfile")
    if profile:
        extra["iam/info"] = json.dumps(
            {"Code": "Success", "InstanceProfileArn": profile["Arn"], "InstanceProfileId": profile.get("Id", "")}
        )
    return MetadataState(
        instance_id=raw["InstanceId"],
        instance_type=raw["InstanceType"],
        availability_zone=raw["Placement"]["AvailabilityZone"],
        region=region,
        ami_id=raw["ImageId"],
        private_ip=raw.get("PrivateIpAddress"),
        public_ip=raw.get("PublicIpAddress"),
        lifecycle="spot" if raw.get("InstanceLifecycle") == "spot" else "on-demand",
        extra={k: v for k, v in extra.items() if v},
    )
