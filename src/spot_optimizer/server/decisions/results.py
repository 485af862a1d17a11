"""Fold command results into the instance table at once, so the next decision sees their effect
without waiting for the next inventory report: a launched instance appears with its role and pool, a
promotion swaps the roles, a terminated instance leaves the workload."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from spot_optimizer.core.commands import CommandResult, CommandStatus, CommandType
from spot_optimizer.core.models import (
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    REQUEST_ID_TAG,
    ROLE_TAG,
    WORKLOAD_TAG,
    Pool,
    Role,
)
from spot_optimizer.server.models import AgentRow, InstanceRow
from spot_optimizer.server.services.sql import insert_ignore


def apply_result(
    session: Session, agent: AgentRow, command_type: str, params: dict[str, Any], res: CommandResult, now: datetime
) -> None:
    """Called for each newly accepted result, inside the caller's transaction."""
    if res.status is not CommandStatus.SUCCEEDED:
        return
    if command_type == CommandType.LAUNCH.value:
        _launched(session, agent, params, res, now)
    elif command_type == CommandType.PROMOTE.value:
        _set_role(session, str(params.get("instance_id") or ""), Role.PRIMARY, now)
        zombie = res.result.get("zombie")
        if zombie:
            _set_role(session, str(zombie), Role.ZOMBIE, now)
    elif command_type == CommandType.TERMINATE.value:
        row = session.get(InstanceRow, str(params.get("instance_id") or ""))
        if row is not None:
            state = res.result.get("current_state") or res.result.get("previous_state")
            row.state = "terminated" if state in (None, "not-found") else str(state)
            row.updated_at = now


def _launched(session: Session, agent: AgentRow, params: dict[str, Any], res: CommandResult, now: datetime) -> None:
    instance_id = res.result.get("instance_id")
    pool_id = res.result.get("pool")
    if not instance_id or not pool_id:
        return  # a dry run launches nothing
    pool = Pool.parse(str(pool_id))
    role = str(params.get("role") or Role.REPLICA.value)
    workload = str(params.get("workload") or agent.workload)
    tags = {MANAGED_BY_KEY: MANAGED_BY_VALUE, ROLE_TAG: role, WORKLOAD_TAG: workload, REQUEST_ID_TAG: res.command_id}
    # An inventory report that already has the instance knows better: keep it.
    insert_ignore(session, InstanceRow, {
        "instance_id": str(instance_id),
        "region": pool.region,
        "az": str(res.result.get("az") or pool.az),
        "instance_type": pool.instance_type,
        "pool": pool.pool_id,
        "market": pool.market.value,
        "state": str(res.result.get("state") or "pending"),
        "tags": tags,
        "managed": True,
        "workload": workload,
        "role": role,
        "launch_time": res.finished_at.isoformat(),
        "private_ip": None,
        "public_ip": None,
        "reported_by": agent.agent_id,
        "updated_at": now,
        "demoted_at": None,
    })


def _set_role(session: Session, instance_id: str, role: Role, now: datetime) -> None:
    row = session.get(InstanceRow, instance_id)
    if row is None:
        return
    row.role = role.value
    row.tags = {**(row.tags or {}), ROLE_TAG: role.value}
    if role is Role.PRIMARY:
        row.demoted_at = None
    elif row.demoted_at is None:
        row.demoted_at = now
    row.updated_at = now
