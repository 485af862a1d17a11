"""Domain vocabulary shared by every part: pools, roles, toggles, agent states, instances, notices."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MANAGED_BY_KEY = "ManagedBy"
MANAGED_BY_VALUE = "SpotOptimizer"
ROLE_TAG = "SpotOptimizer:Role"
WORKLOAD_TAG = "SpotOptimizer:Workload"
REQUEST_ID_TAG = "SpotOptimizer:RequestId"
PROMOTED_AT_TAG = "SpotOptimizer:PromotedAt"
DEMOTED_AT_TAG = "SpotOptimizer:DemotedAt"


class Market(StrEnum):
    SPOT = "spot"
    ON_DEMAND = "on-demand"


class Role(StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"
    ZOMBIE = "zombie"


class AgentState(StrEnum):
    REGISTER_PENDING = "REGISTER_PENDING"
    ONLINE_READY = "ONLINE_READY"
    EXECUTING = "EXECUTING"
    NOTICE_RECEIVED = "NOTICE_RECEIVED"
    DRAINING = "DRAINING"
    TERMINATED = "TERMINATED"
    OFFLINE = "OFFLINE"

    def is_alive(self) -> bool:
        return self not in (AgentState.TERMINATED, AgentState.OFFLINE)


class InstanceState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"
    STOPPING = "stopping"
    STOPPED = "stopped"

    def is_active(self) -> bool:
        return self in (InstanceState.PENDING, InstanceState.RUNNING)


class Pool(BaseModel):
    """Where capacity comes from: (region, instance type, availability zone, market)."""

    model_config = ConfigDict(frozen=True)

    region: str
    instance_type: str
    az: str
    market: Market = Market.SPOT

    @property
    def pool_id(self) -> str:
        return f"{self.region}/{self.instance_type}/{self.az}/{self.market.value}"

    @classmethod
    def parse(cls, pool_id: str) -> Pool:
        parts = pool_id.split("/")
        if len(parts) != 4:
            raise ValueError(f"pool id must be region/type/az/market, got {pool_id!r}")
        return cls(region=parts[0], instance_type=parts[1], az=parts[2], market=Market(parts[3]))

    def __str__(self) -> str:
        return self.pool_id


class Toggles(BaseModel):
    """The operator's switches for one agent; persisted on both sides."""

    auto_switching: bool = False
    auto_terminate: bool = False
    manual_replica: bool = False
    emergency_only: bool = False


TOGGLE_NAMES: tuple[str, ...] = tuple(Toggles.model_fields)


class LaunchConfig(BaseModel):
    """What a new instance needs to look like its parent: taken from the agent's own instance."""

    ami_id: str
    instance_type: str
    availability_zone: str
    subnet_id: str | None = None
    vpc_id: str | None = None
    security_groups: list[str] = Field(default_factory=list)
    iam_instance_profile: str | None = None  # ARN
    key_name: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def iam_instance_profile_name(self) -> str | None:
        if not self.iam_instance_profile:
            return None
        # arn:aws:iam::123:instance-profile/path/name -> name (the last path element)
        return self.iam_instance_profile.rsplit("/", 1)[-1]


class InstanceMetadata(BaseModel):
    """What IMDSv2 says about the instance the agent runs on."""

    instance_id: str
    instance_type: str
    availability_zone: str
    region: str
    ami_id: str
    private_ip: str | None = None
    public_ip: str | None = None
    lifecycle: Market = Market.ON_DEMAND


class InstanceRecord(BaseModel):
    """One instance as the inventory sees it."""

    instance_id: str
    state: str
    az: str
    instance_type: str
    pool: str
    market: Market
    tags: dict[str, str] = Field(default_factory=dict)
    launch_time: str | None = None
    private_ip: str | None = None
    public_ip: str | None = None

    @property
    def managed(self) -> bool:
        return self.tags.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE

    @property
    def role(self) -> Role | None:
        value = self.tags.get(ROLE_TAG)
        try:
            return Role(value) if value else None
        except ValueError:
            return None


class NoticeKind(StrEnum):
    INTERRUPTION = "interruption"  # spot/instance-action
    REBALANCE = "rebalance"  # events/recommendations/rebalance
    SCHEDULED = "scheduled"  # events/maintenance/scheduled


class Notice(BaseModel):
    """A notice seen in the metadata service. Its id is a hash of the payload (spot notices have none)."""

    notice_id: str
    kind: NoticeKind
    instance_id: str
    payload: dict[str, Any]
    detected_at: datetime
    action_time: datetime | None = None

    @staticmethod
    def make_id(kind: NoticeKind, instance_id: str, payload: Any) -> str:
        blob = json.dumps([kind.value, instance_id, payload], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


class SpotPrice(BaseModel):
    instance_type: str
    az: str
    price: float
    timestamp: datetime


class OnDemandPrice(BaseModel):
    instance_type: str
    region: str
    price: float
    estimated: bool = False  # True when derived from the spot price, not the Pricing API
    source: str = "pricing-api"
