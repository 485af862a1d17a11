"""What the decision engine reads and what it returns. Plain data, so the server, the agent and the
backtester can build these views from their own stores and act on the answer."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from spot_optimizer.core.commands import CommandType, LaunchParams, PromoteParams, TerminateParams
from spot_optimizer.core.models import Market, Pool, Role, Toggles
from spot_optimizer.core.policy import Settings


class InstanceView(BaseModel):
    """One live instance of a workload (terminated ones are left out by the caller)."""

    instance_id: str
    pool: Pool
    role: Role
    ready: bool = True  # booted and able to serve; False while pending
    interruption_notice: bool = False  # spot/instance-action seen: it dies within two minutes
    rebalance_notice: bool = False  # events/recommendations/rebalance seen
    launched_at: datetime | None = None


class WorkloadView(BaseModel):
    workload_id: str
    region: str
    instance_types: list[str]  # allowed instance types
    azs: list[str]  # allowed availability zones
    instances: list[InstanceView] = Field(default_factory=list)
    toggles: Toggles = Field(default_factory=Toggles)
    settings: Settings = Field(default_factory=Settings)
    # When the primary last changed (promotion or replacement): the start of the cooldown.
    last_move_at: datetime | None = None

    def allows(self, pool: Pool) -> bool:
        return (
            pool.region == self.region
            and pool.instance_type in self.instance_types
            and pool.az in self.azs
            and pool.market in self.settings.allowed_markets
        )


class MarketView(BaseModel):
    """Prices now, USD per hour. `spot` is keyed by spot pool id, `ondemand` by instance type."""

    spot: dict[str, float] = Field(default_factory=dict)
    ondemand: dict[str, float] = Field(default_factory=dict)

    def price(self, pool: Pool) -> float | None:
        if pool.market is Market.ON_DEMAND:
            return self.ondemand.get(pool.instance_type)
        return self.spot.get(pool.pool_id)


class EventKind(StrEnum):
    INTERRUPTION = "interruption"  # two-minute notice for `instance_id`
    REBALANCE = "rebalance"  # rebalance recommendation for `instance_id`
    CAPACITY_ERROR = "capacity_error"  # a launch into `pool_id` failed for lack of capacity
    TICK = "tick"  # periodic re-evaluation


class Event(BaseModel):
    """What woke the engine up. The engine also reads the same facts from the workload and risk views;
    the event lets a caller that has not stored them yet still get the right answer."""

    kind: EventKind
    at: datetime
    instance_id: str | None = None
    pool_id: str | None = None


class ActionKind(StrEnum):
    LAUNCH = "launch"  # launch an instance in `pool` with `role`
    FALLBACK_TO_ON_DEMAND = "fallback_to_on_demand"  # a launch in an on-demand pool, no spot left
    RETURN_TO_SPOT = "return_to_spot"  # a spot launch that will replace an on-demand fallback
    PROMOTE = "promote"  # `instance_id` becomes primary, `old_instance_id` becomes zombie
    DEMOTE = "demote"  # tag `instance_id` zombie (it is no longer needed or is dying)
    TERMINATE = "terminate"  # terminate zombie `instance_id`
    NOTHING = "nothing"


class Trigger(StrEnum):
    """Why an action was taken; SWITCH and STANDBY are voluntary, the rest react to something."""

    INTERRUPTION = "interruption"
    REBALANCE = "rebalance"
    MISSING_PRIMARY = "missing_primary"
    RETURN_TO_SPOT = "return_to_spot"
    SWITCH = "switch"
    STANDBY = "standby"
    CLEANUP = "cleanup"
    NONE = "none"


class Rationale(BaseModel):
    text: str
    numbers: dict[str, Any] = Field(default_factory=dict)


class Action(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: ActionKind
    trigger: Trigger
    rationale: Rationale
    pool: Pool | None = None  # launches
    role: Role | None = None  # launches: the role the new instance gets
    max_price: float | None = None  # launches into spot: the cap in USD/h
    # Launches: where to try next, in order, on a capacity error (on-demand last if allowed).
    fallback_pools: list[Pool] = Field(default_factory=list)
    instance_id: str | None = None  # promote / demote / terminate
    old_instance_id: str | None = None  # promote: the primary that becomes zombie

    @property
    def is_launch(self) -> bool:
        return self.kind in (ActionKind.LAUNCH, ActionKind.FALLBACK_TO_ON_DEMAND, ActionKind.RETURN_TO_SPOT)


class Decision(BaseModel):
    workload_id: str
    at: datetime
    actions: list[Action]  # never empty: NOTHING says why nothing is done


def command_for(action: Action, workload_id: str) -> tuple[CommandType, dict[str, Any]] | None:
    """The agent command that carries out an action, or None for actions the server does itself
    (DEMOTE is a retag; NOTHING is nothing)."""
    if action.is_launch and action.pool is not None:
        params = LaunchParams(
            instance_type=action.pool.instance_type,
            az=action.pool.az,
            market=action.pool.market,
            role=action.role or Role.REPLICA,
            workload=workload_id,
            max_price=action.max_price,
        )
        return CommandType.LAUNCH, params.model_dump(mode="json")
    if action.kind is ActionKind.PROMOTE and action.instance_id:
        promote = PromoteParams(instance_id=action.instance_id, old_instance_id=action.old_instance_id)
        return CommandType.PROMOTE, promote.model_dump(mode="json")
    if action.kind is ActionKind.TERMINATE and action.instance_id:
        term = TerminateParams(instance_id=action.instance_id, reason=action.rationale.text)
        return CommandType.TERMINATE, term.model_dump(mode="json")
    return None
