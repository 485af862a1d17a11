"""A workload as the engine sees it, read from the database: its live instances with their roles,
pools, readiness and notices, its toggles, its allowed pools and settings, and when it last moved."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spot_optimizer.core.commands import CommandStatus, CommandType
from spot_optimizer.core.decision import InstanceView, WorkloadView
from spot_optimizer.core.models import AgentState, InstanceState, NoticeKind, Pool, Role, Toggles
from spot_optimizer.server.decisions.policy import allowed, engine_settings, stored_policy
from spot_optimizer.server.models import AgentRow, CommandRow, InstanceRow, NoticeRow, WorkloadRow

logger = logging.getLogger(__name__)

# Reason prefix of the promote commands the loop uses only to retag a demoted instance `zombie`: they
# are no move of the workload, so they do not start the cooldown.
RETAG_REASON = "retag:"
ACTIVE_STATES = (InstanceState.PENDING.value, InstanceState.RUNNING.value)


def agent_online(agent: AgentRow | None) -> bool:
    return agent is not None and AgentState(agent.state).is_alive()


@dataclass
class WorkloadState:
    view: WorkloadView
    agents: list[AgentRow]
    rows: dict[str, InstanceRow]  # instance rows behind the view's instances (agent-only ones absent)

    @property
    def name(self) -> str:
        return self.view.workload_id

    def primary(self) -> InstanceView | None:
        return next((i for i in self.view.instances if i.role is Role.PRIMARY), None)

    def command_agent(self) -> AgentRow | None:
        """Where commands go: the primary's agent while it lives (also during its two-minute notice),
        else any online agent of the workload."""
        online = [a for a in self.agents if agent_online(a)]
        primary = self.primary()
        for agent in online:
            if primary is not None and agent.instance_id == primary.instance_id:
                return agent
        return online[0] if online else None

    def collect_agent(self) -> AgentRow | None:
        """Where price and inventory requests go: an online agent whose instance is neither being interrupted
        (a dying instance's agent has a launch or a promotion to run first) nor a zombie (it is about to be
        terminated, and a request it takes with it stays open until its lease runs out); the primary's agent
        first, then a replica's. Else the command agent."""
        interrupted = {i.instance_id for i in self.view.instances if i.interruption_notice}
        roles = {i.instance_id: i.role for i in self.view.instances}
        rank = {Role.PRIMARY: 0, Role.REPLICA: 1}
        candidates = [a for a in self.agents if agent_online(a) and a.instance_id not in interrupted
                      and roles.get(a.instance_id) in rank]
        if candidates:
            return min(candidates, key=lambda a: rank[roles[a.instance_id]])
        return self.command_agent()


def _launched_at(row: InstanceRow) -> datetime:
    if row.launch_time:
        try:
            parsed = datetime.fromisoformat(row.launch_time.replace("Z", "+00:00"))
            if parsed.tzinfo is not None:
                return parsed
        except ValueError:
            pass
    return row.updated_at


def _role(value: str | None) -> Role | None:
    try:
        return Role(value) if value else None
    except ValueError:
        return None


def load_workload(session: Session, workload: WorkloadRow, now: datetime) -> WorkloadState | None:
    """The engine's view of `workload`, or None when it has no instance the engine could reason about."""
    policy = stored_policy(workload)
    settings = engine_settings(policy)
    agents = list(session.scalars(
        select(AgentRow).where(AgentRow.workload == workload.name).order_by(AgentRow.registered_at, AgentRow.agent_id)
    ))
    by_instance = {a.instance_id: a for a in agents}
    known = {
        r.instance_id: r for r in session.scalars(select(InstanceRow).where(InstanceRow.workload == workload.name))
    }
    notices = session.execute(
        select(NoticeRow.instance_id, NoticeRow.kind).where(NoticeRow.workload == workload.name)
    ).all()
    interrupted = {i for i, k in notices if k == NoticeKind.INTERRUPTION.value}
    rebalanced = {i for i, k in notices if k == NoticeKind.REBALANCE.value}

    instances: list[InstanceView] = []
    rows: dict[str, InstanceRow] = {}
    for row in known.values():
        role = Role.ZOMBIE if row.demoted_at is not None else _role(row.role)
        if not row.managed or row.state not in ACTIVE_STATES or role is None:
            continue
        agent = by_instance.get(row.instance_id)
        launched = _launched_at(row)
        running = row.state == InstanceState.RUNNING.value or agent_online(agent)
        booted = (now - launched).total_seconds() >= settings.boot_time_s
        instances.append(InstanceView(
            instance_id=row.instance_id, pool=Pool.parse(row.pool), role=role,
            ready=running and (agent_online(agent) or booted),
            interruption_notice=row.instance_id in interrupted, rebalance_notice=row.instance_id in rebalanced,
            launched_at=launched,
        ))
        rows[row.instance_id] = row
    for agent in agents:  # an agent whose instance no inventory has reported yet
        role = _role(agent.role)
        if agent.instance_id in known or not agent_online(agent) or role is None or not agent.pool:
            continue
        instances.append(InstanceView(
            instance_id=agent.instance_id, pool=Pool.parse(agent.pool), role=role, ready=True,
            interruption_notice=agent.instance_id in interrupted, rebalance_notice=agent.instance_id in rebalanced,
        ))
    if not instances and not agents:
        return None

    primary = next((i for i in instances if i.role is Role.PRIMARY), None)
    anchor = primary.pool if primary else (instances[0].pool if instances else None)
    first = agents[0] if agents else None
    region = anchor.region if anchor else (first.region if first else "")
    types, azs = allowed(
        session, policy, region,
        anchor.instance_type if anchor else (first.instance_type if first else None),
        anchor.az if anchor else (first.az if first else None),
    )
    toggles_from = (by_instance.get(primary.instance_id) if primary else None) or \
        next((a for a in agents if agent_online(a)), first)
    view = WorkloadView(
        workload_id=workload.name, region=region, instance_types=types, azs=azs,
        instances=sorted(instances, key=lambda i: i.instance_id),
        toggles=Toggles.model_validate(toggles_from.toggles) if toggles_from else Toggles(),
        settings=settings, last_move_at=last_move_at(session, workload.name),
    )
    return WorkloadState(view=view, agents=agents, rows=rows)


def last_move_at(session: Session, workload: str) -> datetime | None:
    """When the primary last changed: the newest successful promotion (not a mere retag)."""
    return session.scalar(
        select(func.max(CommandRow.finished_at)).where(
            CommandRow.workload == workload,
            CommandRow.type == CommandType.PROMOTE.value,
            CommandRow.status == CommandStatus.SUCCEEDED.value,
            func.coalesce(CommandRow.reason, "").not_like(f"{RETAG_REASON}%"),
        )
    )


def effective_policy(session: Session, workload: WorkloadRow, now: datetime) -> dict[str, object]:
    """What the operator stored and what the engine uses now (defaults filled in)."""
    state = load_workload(session, workload, now)
    policy = stored_policy(workload)
    return {
        "workload": workload.name,
        "policy": policy.model_dump(mode="json"),
        "instance_types": state.view.instance_types if state else list(policy.instance_types or []),
        "azs": state.view.azs if state else list(policy.azs or []),
        "settings": engine_settings(policy).model_dump(mode="json"),
    }
