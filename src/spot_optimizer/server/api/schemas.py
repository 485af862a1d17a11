"""Response and request bodies of the operator API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from spot_optimizer.core.commands import CommandType
from spot_optimizer.core.models import Toggles
from spot_optimizer.server.services.tokens import TokenKind


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class AgentOut(_Out):
    agent_id: str
    instance_id: str
    workload: str
    state: str
    role: str | None
    last_heartbeat: datetime | None = Field(validation_alias="last_heartbeat_at")
    toggles: Toggles
    region: str
    az: str
    instance_type: str
    pool: str | None
    version: str
    registered_at: datetime


class WorkloadOut(_Out):
    name: str
    created_at: datetime
    launch_config: dict[str, Any] | None
    allowed_pools: list[Any]
    policy: dict[str, Any] | None = None


class InstanceOut(_Out):
    instance_id: str
    region: str
    az: str
    instance_type: str
    pool: str
    market: str
    state: str
    tags: dict[str, Any]
    managed: bool
    workload: str | None
    role: str | None
    launch_time: str | None
    private_ip: str | None
    public_ip: str | None
    reported_by: str
    updated_at: datetime


class SpotPriceOut(_Out):
    region: str
    instance_type: str
    az: str
    price: float
    ts: datetime


class OnDemandPriceOut(_Out):
    region: str
    instance_type: str
    price: float
    estimated: bool
    source: str
    updated_at: datetime


class PricesOut(BaseModel):
    spot: list[SpotPriceOut]
    ondemand: list[OnDemandPriceOut]


class NoticeOut(_Out):
    notice_id: str
    agent_id: str
    workload: str
    instance_id: str
    kind: str
    payload: dict[str, Any]
    detected_at: datetime
    action_time: datetime | None
    received_at: datetime


class CommandOut(_Out):
    command_id: str
    agent_id: str
    workload: str
    type: str
    params: dict[str, Any]
    status: str
    reason: str | None
    source: str
    issued_at: datetime
    deadline: datetime
    delivered_at: datetime | None
    lease_expires_at: datetime | None
    delivery_count: int
    finished_at: datetime | None
    result: dict[str, Any] | None
    error: str | None
    error_code: str | None


class CommandCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: str
    type: CommandType
    params: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = "manual"
    deadline_s: float | None = Field(default=None, gt=0, description="default: the server's command deadline")


class TogglesPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    auto_switching: bool | None = None
    auto_terminate: bool | None = None
    manual_replica: bool | None = None
    emergency_only: bool | None = None


class TogglesPut(Toggles):
    model_config = ConfigDict(extra="forbid")


class EventOut(_Out):
    id: int
    ts: datetime
    kind: str
    workload: str | None
    agent_id: str | None
    command_id: str | None
    message: str
    data: dict[str, Any]


class DecisionOut(_Out):
    decision_id: str
    workload: str
    ts: datetime
    actions: list[Any]
    rationale: list[Any]


class TokenCreate(BaseModel):
    kind: TokenKind
    note: str | None = None


class TokenOut(BaseModel):
    kind: TokenKind
    token: str = Field(description="shown once; only its sha256 is stored")
    id: int | None = Field(default=None, description="the token's id, to revoke it (DELETE /api/v1/tokens/{id})")


class WorkloadPolicyOut(BaseModel):
    workload: str
    policy: dict[str, Any] = Field(description="what the operator set (null parts take defaults)")
    instance_types: list[str] = Field(description="allowed instance types the decision loop uses now")
    azs: list[str] = Field(description="allowed availability zones the decision loop uses now")
    settings: dict[str, Any] = Field(description="the engine settings in effect")
