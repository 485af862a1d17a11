"""The agent <-> server wire protocol (JSON bodies under /api/v1/agent/...).

Both sides import these models, so a change here is a protocol change: keep fields additive.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from spot_optimizer.core.commands import Command, CommandResult
from spot_optimizer.core.models import (
    AgentState,
    InstanceMetadata,
    InstanceRecord,
    LaunchConfig,
    Notice,
    OnDemandPrice,
    Role,
    SpotPrice,
    Toggles,
)

API_PREFIX = "/api/v1/agent"


class RegisterRequest(BaseModel):
    enrollment_token: str
    metadata: InstanceMetadata
    launch_config: LaunchConfig | None = None
    workload: str | None = None
    role: Role | None = None
    version: str
    toggles: Toggles | None = None  # what the agent has persisted, used only for a new agent


class RegisterResponse(BaseModel):
    agent_id: str
    agent_secret: str
    workload: str
    toggles: Toggles
    heartbeat_interval_s: float


class ReconnectRequest(BaseModel):
    metadata: InstanceMetadata
    launch_config: LaunchConfig | None = None
    version: str


class ReconnectResponse(BaseModel):
    agent_id: str
    workload: str
    toggles: Toggles
    heartbeat_interval_s: float


class HeartbeatRequest(BaseModel):
    state: AgentState
    role: Role | None = None
    instance_id: str
    pool: str | None = None
    version: str
    sent_at: datetime | None = None


class AgentPolicy(BaseModel):
    """Where the workload may run, so that an agent cut off from the server can still act on a notice."""

    instance_types: list[str]
    availability_zones: list[str]
    allow_on_demand: bool = True


class HeartbeatResponse(BaseModel):
    toggles: Toggles
    commands: list[Command] = Field(default_factory=list)
    heartbeat_interval_s: float
    policy: AgentPolicy | None = None  # the workload's allowed pools, once the decision loop knows them


class ResultsRequest(BaseModel):
    results: list[CommandResult]


class NoticesRequest(BaseModel):
    notices: list[Notice]


class PricesRequest(BaseModel):
    spot: list[SpotPrice] = Field(default_factory=list)
    ondemand: list[OnDemandPrice] = Field(default_factory=list)


class InventoryRequest(BaseModel):
    instances: list[InstanceRecord]
    collected_at: datetime | None = None


class Ack(BaseModel):
    accepted: int = 0
    duplicates: int = 0
    detail: dict[str, Any] = Field(default_factory=dict)
