"""The append-only event log: everything that happened, queryable by workload, agent and time."""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from spot_optimizer.server.models import EventRow

logger = logging.getLogger(__name__)


class EventKind(StrEnum):
    AGENT_REGISTERED = "agent_registered"
    AGENT_RECONNECTED = "agent_reconnected"
    AGENT_OFFLINE = "agent_offline"
    AGENT_ONLINE = "agent_online"
    AGENT_STATE_CHANGED = "agent_state_changed"
    ROLE_CHANGED = "role_changed"
    TOGGLES_CHANGED = "toggles_changed"
    NOTICE_RECEIVED = "notice_received"
    COMMAND_ISSUED = "command_issued"
    COMMAND_DELIVERED = "command_delivered"
    COMMAND_FINISHED = "command_finished"
    COMMAND_EXPIRED = "command_expired"
    COMMAND_REASSIGNED = "command_reassigned"
    DECISION = "decision"
    INVENTORY_REPORTED = "inventory_reported"
    POLICY_CHANGED = "policy_changed"


def emit(
    session: Session,
    kind: EventKind,
    message: str,
    *,
    now: datetime,
    workload: str | None = None,
    agent_id: str | None = None,
    command_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Add an event to the session; it is written with the caller's transaction."""
    session.add(
        EventRow(
            ts=now,
            kind=kind.value,
            workload=workload,
            agent_id=agent_id,
            command_id=command_id,
            message=message,
            data=data or {},
        )
    )
    logger.info("event %s: %s", kind.value, message)


def list_events(
    session: Session,
    *,
    workload: str | None = None,
    agent_id: str | None = None,
    since: datetime | None = None,
    kind: str | None = None,
    limit: int = 1000,
) -> list[EventRow]:
    query = select(EventRow)
    if workload:
        query = query.where(EventRow.workload == workload)
    if agent_id:
        query = query.where(EventRow.agent_id == agent_id)
    if since:
        query = query.where(EventRow.ts >= since)
    if kind:
        query = query.where(EventRow.kind == kind)
    return list(session.scalars(query.order_by(EventRow.id).limit(limit)))
