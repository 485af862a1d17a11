"""Commands the control plane sends to an agent, and the results the agent sends back.

The command id doubles as the AWS request id: it is the `ClientToken` of a launch and the value of the
`SpotOptimizer:RequestId` tag, which is how a relaunch after a crash finds the instance it already made.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from spot_optimizer.core.models import Market, Role


class CommandType(StrEnum):
    LAUNCH = "launch"
    TERMINATE = "terminate"
    PROMOTE = "promote"
    COLLECT_INVENTORY = "collect_inventory"
    COLLECT_PRICES = "collect_prices"


class CommandStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"

    def is_final(self) -> bool:
        return self in (CommandStatus.SUCCEEDED, CommandStatus.FAILED, CommandStatus.EXPIRED)


class LaunchParams(BaseModel):
    instance_type: str
    az: str | None = None
    market: Market = Market.SPOT
    role: Role = Role.REPLICA
    workload: str | None = None
    max_price: float | None = None  # USD/h cap for spot; None = on-demand price


class TerminateParams(BaseModel):
    instance_id: str
    reason: str = "requested"


class PromoteParams(BaseModel):
    instance_id: str  # the replica that becomes primary
    old_instance_id: str | None = None  # the primary that becomes zombie (default: the agent's own)


class CollectPricesParams(BaseModel):
    instance_types: list[str] = Field(default_factory=list)


PARAMS_BY_TYPE: dict[CommandType, type[BaseModel] | None] = {
    CommandType.LAUNCH: LaunchParams,
    CommandType.TERMINATE: TerminateParams,
    CommandType.PROMOTE: PromoteParams,
    CommandType.COLLECT_INVENTORY: None,
    CommandType.COLLECT_PRICES: CollectPricesParams,
}


def validate_params(command_type: CommandType, params: dict[str, Any]) -> dict[str, Any]:
    """Check a command's parameters against its type; returns them normalised. Raises ValueError."""
    model = PARAMS_BY_TYPE[command_type]
    if model is None:
        return {}
    return model.model_validate(params).model_dump(mode="json")


class Command(BaseModel):
    command_id: str
    type: CommandType
    params: dict[str, Any] = Field(default_factory=dict)
    issued_at: datetime | None = None
    deadline: datetime | None = None
    reason: str | None = None  # why it was issued (decision rationale or "manual")
    # Which delivery of the command this is (1 = the first to any agent); None from servers that do not say.
    # On a first delivery that the agent's journal has never started, nobody can have run it yet.
    delivery: int | None = None


class CommandResult(BaseModel):
    command_id: str
    status: CommandStatus  # succeeded | failed
    result: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    error_code: str | None = None
    finished_at: datetime
    # Set when the agent acted by itself (server unreachable during a notice): the server has no record
    # of the command, so the result carries it.
    autonomous: bool = False
    command: Command | None = None
