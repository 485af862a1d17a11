"""Keep the engine's inputs fresh: ask one live agent of each workload for the spot and on-demand prices of
the workload's allowed types, and for the region's inventory, at a fixed cadence. A request is made only
when none is open and the last one is older than the cadence, so the loop can run as often as it likes.

An inventory covers the whole region (every workload's instances), so its cadence is kept per region, not
per workload: a hundred workloads in one region make one DescribeInstances sweep per cadence, not a hundred.
Requests go to an agent whose instance is not being interrupted, so they never queue before its launch."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from spot_optimizer.core.commands import CommandType
from spot_optimizer.server.decisions.actuate import Actuator
from spot_optimizer.server.models import AgentRow, CommandRow
from spot_optimizer.server.services.commands import OPEN_STATUSES


def _last_issued(session: Session, workload: str, command_type: CommandType) -> datetime | None:
    return session.scalar(
        select(func.max(CommandRow.issued_at)).where(
            CommandRow.workload == workload, CommandRow.type == command_type.value
        )
    )


def _region_busy_or_fresh(session: Session, region: str, command_type: CommandType, now: datetime,
                          every_s: float) -> bool:
    """True when a request of this type is open anywhere in the region or was issued within the cadence."""
    recent = (
        select(CommandRow.command_id)
        .join(AgentRow, AgentRow.agent_id == CommandRow.agent_id)
        .where(AgentRow.region == region, CommandRow.type == command_type.value,
               or_(CommandRow.issued_at > now - timedelta(seconds=every_s), CommandRow.status.in_(OPEN_STATUSES)))
        .limit(1)
    )
    return session.scalar(recent) is not None


def refresh(actuator: Actuator, prices_every_s: float, inventory_every_s: float) -> list[dict[str, Any]]:
    """Issue the collect commands that are due; returns what was issued."""
    state, now = actuator.state, actuator.now
    plans: list[tuple[CommandType, dict[str, Any], float, str]] = [
        (CommandType.COLLECT_PRICES, {"instance_types": list(state.view.instance_types)}, prices_every_s,
         "keep spot and on-demand prices of the allowed types fresh for the decision loop"),
        (CommandType.COLLECT_INVENTORY, {}, inventory_every_s,
         "keep the region's inventory (instances, roles) fresh for the decision loop"),
    ]
    issued = []
    for command_type, params, every_s, reason in plans:
        if every_s <= 0:
            continue
        if command_type is CommandType.COLLECT_INVENTORY:
            if _region_busy_or_fresh(actuator.session, state.view.region, command_type, now, every_s):
                continue
        else:
            last = _last_issued(actuator.session, state.name, command_type)
            if last is not None and now - last < timedelta(seconds=every_s):
                continue
        outcome = actuator.issue(command_type, params, reason, agent=state.collect_agent())
        if outcome["outcome"] == "issued":
            issued.append({"kind": command_type.value, **outcome})
    return issued
