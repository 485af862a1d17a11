"""Commands: stored before delivery, leased on delivery, redelivered after the lease, expired after the
deadline; a result is accepted once."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import case, or_, select, update
from sqlalchemy.orm import Session

from spot_optimizer.core.commands import Command, CommandResult, CommandStatus, CommandType, validate_params
from spot_optimizer.core.protocol import Ack
from spot_optimizer.server.decisions.results import apply_result
from spot_optimizer.server.errors import Conflict, Forbidden, NotFound, Unprocessable
from spot_optimizer.server.models import AgentRow, CommandRow, InstanceRow
from spot_optimizer.server.services.events import EventKind, emit
from spot_optimizer.server.services.sql import insert_ignore
from spot_optimizer.server.settings import ServerSettings

logger = logging.getLogger(__name__)

OPEN_STATUSES = (CommandStatus.PENDING.value, CommandStatus.DELIVERED.value)
DONE_STATUSES = (CommandStatus.SUCCEEDED.value, CommandStatus.FAILED.value)
# The order an agent gets its commands in (it runs them in that order): a promotion first (the workload
# moves with no downtime), then a launch, then a terminate (an old instance goes only after its successor
# is in place), then collections, which must never hold up a move on a notice. The pass that issues them
# all stamps them with the same time, so the type decides.
_DELIVERY_ORDER = case(
    (CommandRow.type == CommandType.PROMOTE.value, 0),
    (CommandRow.type == CommandType.LAUNCH.value, 1),
    (CommandRow.type == CommandType.TERMINATE.value, 2),
    else_=3,
)


def describe_validation_error(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']}" for err in exc.errors()
    )


def _check_managed(session: Session, agent: AgentRow, instance_id: str, action: str) -> None:
    row = session.get(InstanceRow, instance_id)
    if row is None or not row.managed or row.workload != agent.workload:
        why = (
            "it is not in the inventory"
            if row is None
            else "it is not tagged ManagedBy=SpotOptimizer"
            if not row.managed
            else f"it belongs to workload {row.workload!r}"
        )
        raise Conflict(
            f"refusing to {action} {instance_id}: workload {agent.workload!r} does not manage it ({why})"
        )


def issue_command(
    session: Session,
    *,
    agent_id: str,
    command_type: CommandType,
    params: dict[str, Any],
    settings: ServerSettings,
    now: datetime,
    reason: str | None = None,
    source: str = "manual",
    deadline_s: float | None = None,
) -> CommandRow:
    agent = session.get(AgentRow, agent_id)
    if agent is None:
        raise NotFound(f"unknown agent {agent_id!r}")
    if command_type == CommandType.LAUNCH:
        params = {"workload": agent.workload, **params}
    try:
        clean = validate_params(command_type, params)
    except ValidationError as exc:
        raise Unprocessable(
            f"invalid params for {command_type.value}: {describe_validation_error(exc)}"
        ) from exc
    if command_type == CommandType.TERMINATE:
        _check_managed(session, agent, clean["instance_id"], "terminate")
    elif command_type == CommandType.PROMOTE:
        _check_managed(session, agent, clean["instance_id"], "promote")
        if clean.get("old_instance_id"):
            _check_managed(session, agent, clean["old_instance_id"], "demote")
    row = CommandRow(
        command_id=uuid.uuid4().hex,
        agent_id=agent_id,
        workload=agent.workload,
        type=command_type.value,
        params=clean,
        status=CommandStatus.PENDING.value,
        reason=reason,
        source=source,
        issued_at=now,
        deadline=now + timedelta(seconds=deadline_s or settings.command_deadline_s),
        delivery_count=0,
    )
    session.add(row)
    emit(
        session,
        EventKind.COMMAND_ISSUED,
        f"command {row.command_id} {command_type.value} issued to agent {agent_id} ({source})",
        now=now,
        workload=agent.workload,
        agent_id=agent_id,
        command_id=row.command_id,
        data={"type": command_type.value, "params": clean, "reason": reason},
    )
    session.commit()
    return row


def to_command(row: CommandRow, delivery: int | None = None) -> Command:
    return Command(
        command_id=row.command_id,
        type=CommandType(row.type),
        params=row.params,
        issued_at=row.issued_at,
        deadline=row.deadline,
        reason=row.reason,
        delivery=delivery,
    )


def expire_due(session: Session, now: datetime, agent_id: str | None = None) -> int:
    query = select(CommandRow.command_id, CommandRow.status, CommandRow.agent_id, CommandRow.workload).where(
        CommandRow.status.in_(OPEN_STATUSES), CommandRow.deadline <= now
    )
    if agent_id:
        query = query.where(CommandRow.agent_id == agent_id)
    count = 0
    for command_id, status, owner, workload in session.execute(query).all():
        result = session.execute(
            update(CommandRow)
            .where(CommandRow.command_id == command_id, CommandRow.status == status)
            .values(status=CommandStatus.EXPIRED.value, finished_at=now, lease_expires_at=None)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            count += 1
            emit(
                session,
                EventKind.COMMAND_EXPIRED,
                f"command {command_id} expired ({status} at its deadline)",
                now=now,
                workload=workload,
                agent_id=owner,
                command_id=command_id,
            )
    session.commit()
    return count


GONE_AGENT_STATES = ("OFFLINE", "TERMINATED")


def reassign_orphans(session: Session, now: datetime) -> int:
    """Commands waiting on an agent that went OFFLINE move to a live agent of the same workload.

    The agent of an interrupted instance dies with it; a command leased to it (terminate the zombie,
    promote the replica) would otherwise wait until its deadline. Running it elsewhere is safe because
    every action is idempotent in AWS (a launch finds its instance by the request-id tag), and a promote
    keeps its meaning by naming the old agent's instance explicitly.
    """
    orphans = session.execute(
        select(CommandRow, AgentRow)
        .join(AgentRow, AgentRow.agent_id == CommandRow.agent_id)
        .where(
            CommandRow.deadline > now,
            AgentRow.state.in_(GONE_AGENT_STATES),
            or_(
                CommandRow.status == CommandStatus.PENDING.value,
                (CommandRow.status == CommandStatus.DELIVERED.value) & (CommandRow.lease_expires_at <= now),
            ),
        )
    ).all()
    moved = 0
    for row, old_agent in orphans:
        live = session.scalars(
            select(AgentRow).where(AgentRow.workload == row.workload, AgentRow.state.not_in(GONE_AGENT_STATES))
            .order_by((AgentRow.role == "primary").desc(), AgentRow.last_heartbeat_at.desc())
        ).first()
        if live is None:
            continue
        params = dict(row.params or {})
        if row.type == CommandType.PROMOTE.value and not params.get("old_instance_id"):
            params["old_instance_id"] = old_agent.instance_id
        result = session.execute(
            update(CommandRow)
            .where(CommandRow.command_id == row.command_id, CommandRow.status == row.status,
                   CommandRow.agent_id == old_agent.agent_id)
            .values(agent_id=live.agent_id, status=CommandStatus.PENDING.value, lease_expires_at=None, params=params)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            moved += 1
            emit(
                session,
                EventKind.COMMAND_REASSIGNED,
                f"command {row.command_id} {row.type} moved from agent {old_agent.agent_id} ({old_agent.state}) "
                f"to agent {live.agent_id}",
                now=now,
                workload=row.workload,
                agent_id=live.agent_id,
                command_id=row.command_id,
                data={"from_agent": old_agent.agent_id, "to_agent": live.agent_id},
            )
    session.commit()
    return moved


def lease_for_agent(
    session: Session, agent: AgentRow, settings: ServerSettings, now: datetime
) -> list[Command]:
    """Pending commands, and delivered ones whose lease ran out, leased to the agent now."""
    expire_due(session, now, agent.agent_id)
    due = session.scalars(
        select(CommandRow)
        .where(
            CommandRow.agent_id == agent.agent_id,
            CommandRow.deadline > now,
            or_(
                CommandRow.status == CommandStatus.PENDING.value,
                (CommandRow.status == CommandStatus.DELIVERED.value) & (CommandRow.lease_expires_at <= now),
            ),
        )
        .order_by(_DELIVERY_ORDER, CommandRow.issued_at, CommandRow.command_id)
    ).all()
    leased: list[Command] = []
    lease_until = now + timedelta(seconds=settings.command_lease_s)
    for row in due:
        old_status, old_count = row.status, row.delivery_count
        result = session.execute(
            update(CommandRow)
            .where(
                CommandRow.command_id == row.command_id,
                CommandRow.status == old_status,
                CommandRow.delivery_count == old_count,
            )
            .values(
                status=CommandStatus.DELIVERED.value,
                delivered_at=now,
                lease_expires_at=lease_until,
                delivery_count=old_count + 1,
            )
            .execution_options(synchronize_session=False)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            continue  # another heartbeat leased it first
        leased.append(to_command(row, delivery=old_count + 1))
        emit(
            session,
            EventKind.COMMAND_DELIVERED,
            f"command {row.command_id} {row.type} delivered to agent {agent.agent_id}"
            + (f" (redelivery #{old_count})" if old_count else ""),
            now=now,
            workload=row.workload,
            agent_id=agent.agent_id,
            command_id=row.command_id,
            data={"delivery": old_count + 1},
        )
    session.commit()
    return leased


def _validate_results(
    session: Session, agent: AgentRow, results: list[CommandResult]
) -> dict[str, CommandRow]:
    """Refuse the whole batch if any result is wrong, so that nothing changes."""
    rows: dict[str, CommandRow] = {}
    for res in results:
        if res.status.value not in DONE_STATUSES:
            raise Unprocessable(
                f"result for command {res.command_id} has status {res.status.value!r}; "
                "a result must be 'succeeded' or 'failed'"
            )
        row = session.get(CommandRow, res.command_id)
        if row is not None:
            if row.agent_id != agent.agent_id:
                raise Forbidden(f"command {res.command_id} belongs to another agent, not to {agent.agent_id}")
            rows[res.command_id] = row
        elif not res.autonomous:
            raise NotFound(f"unknown command {res.command_id!r} (not autonomous, so the server must know it)")
        elif res.command is None or res.command.command_id != res.command_id:
            raise Unprocessable(
                f"autonomous result {res.command_id} must embed its command with the same command_id"
            )
    return rows


def record_results(session: Session, agent: AgentRow, results: list[CommandResult], now: datetime) -> Ack:
    rows = _validate_results(session, agent, results)
    outcome: dict[str, str] = {}
    for res in results:
        if res.command_id in outcome:
            outcome[res.command_id] = "duplicate"
            continue
        row = rows.get(res.command_id)
        values = {
            "status": res.status.value,
            "finished_at": res.finished_at,
            "result": res.result,
            "error": res.error,
            "error_code": res.error_code,
            "lease_expires_at": None,
        }
        if row is None:
            accepted = _insert_autonomous(session, agent, res, values, now)
            late = False
        else:
            late = row.status == CommandStatus.EXPIRED.value
            accepted = row.status not in DONE_STATUSES and bool(
                session.execute(
                    update(CommandRow)
                    .where(CommandRow.command_id == row.command_id, CommandRow.status == row.status)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                ).rowcount  # type: ignore[attr-defined]
            )
        outcome[res.command_id] = "accepted" if accepted else "duplicate"
        if accepted:
            source = row if row is not None else res.command
            assert source is not None  # checked by _validate_results
            apply_result(session, agent, str(source.type), dict(source.params), res, now)
            emit(
                session,
                EventKind.COMMAND_FINISHED,
                f"command {res.command_id} {res.status.value} on agent {agent.agent_id}"
                + (" (autonomous)" if res.autonomous else "")
                + (" (after its deadline)" if late else "")
                + (f": {res.error}" if res.error else ""),
                now=now,
                workload=agent.workload,
                agent_id=agent.agent_id,
                command_id=res.command_id,
                data={"status": res.status.value, "result": res.result, "error_code": res.error_code},
            )
        else:
            logger.info(
                "duplicate result for command %s from agent %s ignored", res.command_id, agent.agent_id
            )
    session.commit()
    accepted_n = sum(1 for v in outcome.values() if v == "accepted")
    dup_n = len(results) - accepted_n
    return Ack(accepted=accepted_n, duplicates=dup_n, detail={"results": outcome})


def _insert_autonomous(
    session: Session, agent: AgentRow, res: CommandResult, values: dict[str, Any], now: datetime
) -> bool:
    cmd = res.command
    assert cmd is not None  # checked by _validate_results
    return insert_ignore(
        session,
        CommandRow,
        {
            "command_id": cmd.command_id,
            "agent_id": agent.agent_id,
            "workload": agent.workload,
            "type": cmd.type.value,
            "params": cmd.params,
            "reason": cmd.reason or "autonomous action while the server was unreachable",
            "source": "autonomous",
            "issued_at": cmd.issued_at or res.finished_at,
            "deadline": cmd.deadline or res.finished_at,
            "delivered_at": None,
            "delivery_count": 0,
            **values,
        },
    )


def get_command(session: Session, command_id: str) -> CommandRow:
    row = session.get(CommandRow, command_id)
    if row is None:
        raise NotFound(f"unknown command {command_id!r}")
    return row


def list_commands(
    session: Session,
    *,
    agent_id: str | None = None,
    workload: str | None = None,
    status: str | None = None,
    limit: int = 1000,
) -> list[CommandRow]:
    query = select(CommandRow)
    if agent_id:
        query = query.where(CommandRow.agent_id == agent_id)
    if workload:
        query = query.where(CommandRow.workload == workload)
    if status:
        query = query.where(CommandRow.status == status)
    return list(session.scalars(query.order_by(CommandRow.issued_at, CommandRow.command_id).limit(limit)))
