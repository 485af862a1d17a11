"""Decisions of the engine, with their rationale (written by the decision loop, server/decisions)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from spot_optimizer.server.models import DecisionRow
from spot_optimizer.server.services.events import EventKind, emit


def record_decision(
    session: Session,
    *,
    workload: str,
    actions: list[dict[str, Any]],
    rationale: list[Any],
    now: datetime,
    decision_id: str | None = None,
) -> DecisionRow:
    """Store one decision and its event (commits)."""
    row = DecisionRow(
        decision_id=decision_id or uuid.uuid4().hex,
        workload=workload,
        ts=now,
        actions=actions,
        rationale=rationale,
    )
    session.add(row)
    emit(
        session,
        EventKind.DECISION,
        f"decision {row.decision_id} for workload {workload}: {len(actions)} action(s)"
        + "".join(f"; {_text(r)}" for r in rationale),
        now=now,
        workload=workload,
        data={"decision_id": row.decision_id, "actions": actions},
    )
    session.commit()
    return row


def _text(item: Any) -> str:
    """A rationale item is a plain string or the engine's {"text", "numbers", ...}."""
    return str(item.get("text", item)) if isinstance(item, dict) else str(item)


def list_decisions(session: Session, *, workload: str | None = None, limit: int = 500) -> list[DecisionRow]:
    query = select(DecisionRow)
    if workload:
        query = query.where(DecisionRow.workload == workload)
    return list(session.scalars(query.order_by(DecisionRow.ts.desc()).limit(limit)))
