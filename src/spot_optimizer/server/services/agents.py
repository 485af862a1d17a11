"""Agents: registration, reconnection, heartbeats, liveness and toggles."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from spot_optimizer.core.models import (
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    ROLE_TAG,
    WORKLOAD_TAG,
    AgentState,
    LaunchConfig,
    Toggles,
)
from spot_optimizer.core.protocol import (
    HeartbeatRequest,
    HeartbeatResponse,
    ReconnectRequest,
    ReconnectResponse,
    RegisterRequest,
    RegisterResponse,
)
from spot_optimizer.server.errors import Forbidden, NotFound, Unauthorized
from spot_optimizer.server.models import AgentRow, InstanceRow, WorkloadRow
from spot_optimizer.server.services import commands as command_service
from spot_optimizer.server.services.events import EventKind, emit
from spot_optimizer.server.services.security import hash_secret, new_secret, secret_matches
from spot_optimizer.server.services.sql import insert_ignore
from spot_optimizer.server.services.tokens import TokenKind, token_is_valid
from spot_optimizer.server.settings import ServerSettings

logger = logging.getLogger(__name__)


def authenticate(session: Session, agent_id: str, secret: str) -> AgentRow:
    agent = session.get(AgentRow, agent_id)
    if agent is None:
        raise NotFound(f"unknown agent {agent_id!r}: register first")
    if not secret_matches(secret, agent.secret_hash):
        raise Unauthorized(f"wrong agent secret for agent {agent_id}")
    return agent


def ensure_workload(session: Session, name: str, launch_config: LaunchConfig | None, now: datetime) -> None:
    insert_ignore(
        session,
        WorkloadRow,
        {
            "name": name,
            "created_at": now,
            "launch_config": launch_config.model_dump(mode="json") if launch_config else None,
            "allowed_pools": [],
        },
    )


def register(
    session: Session, req: RegisterRequest, settings: ServerSettings, now: datetime
) -> RegisterResponse:
    if not token_is_valid(session, TokenKind.ENROLLMENT, req.enrollment_token):
        raise Unauthorized("enrollment token is not valid (create one with `spot-optimizer token create`)")
    meta = req.metadata
    workload = req.workload or meta.instance_id
    ensure_workload(session, workload, req.launch_config, now)
    secret = new_secret()
    agent = session.scalar(select(AgentRow).where(AgentRow.instance_id == meta.instance_id))
    if agent is not None:
        # The agent lost its config (new disk, deleted file): same id, new secret.
        kind_message = f"agent {agent.agent_id} re-registered for instance {meta.instance_id}"
        agent.secret_hash = hash_secret(secret)
        agent.workload = workload
    else:
        # Toggles are the operator's intent for the workload: an instance that joins it (a replica, a
        # replacement) inherits them, so a promotion never silently switches auto_terminate off.
        inherited_from = workload_toggle_source(session, workload)
        toggles = inherited_from.toggles if inherited_from else (req.toggles or Toggles()).model_dump()
        agent = AgentRow(
            agent_id=uuid.uuid4().hex,
            secret_hash=hash_secret(secret),
            instance_id=meta.instance_id,
            workload=workload,
            toggles=dict(toggles),
            registered_at=now,
        )
        session.add(agent)
        kind_message = f"agent {agent.agent_id} registered for instance {meta.instance_id}"
        if inherited_from is not None:
            kind_message += f" (toggles inherited from agent {inherited_from.agent_id})"
    _apply_metadata(agent, req.metadata.model_dump(mode="json"), req.launch_config, req.version)
    agent.state = AgentState.ONLINE_READY.value
    agent.role = req.role.value if req.role else agent.role
    agent.last_heartbeat_at = now
    agent.last_seen_at = now
    _record_own_instance(session, agent, req.launch_config, now)  # flushes the agent row: keep it last
    emit(
        session,
        EventKind.AGENT_REGISTERED,
        f"{kind_message} in workload {workload}",
        now=now,
        workload=workload,
        agent_id=agent.agent_id,
        data={"instance_id": meta.instance_id, "version": req.version, "role": agent.role},
    )
    session.commit()
    return RegisterResponse(
        agent_id=agent.agent_id,
        agent_secret=secret,
        workload=workload,
        toggles=Toggles.model_validate(agent.toggles),
        heartbeat_interval_s=settings.heartbeat_interval_s,
    )


def _record_own_instance(session: Session, agent: AgentRow, launch_config: LaunchConfig | None,
                         now: datetime) -> None:
    """The agent's own instance, as its tags describe it, until the first inventory report: without it
    the server would refuse to promote away from (or demote) a primary it has not yet seen listed."""
    if launch_config is None:
        return
    tags = dict(launch_config.tags)
    insert_ignore(session, InstanceRow, {
        "instance_id": agent.instance_id,
        "region": agent.region,
        "az": agent.az,
        "instance_type": agent.instance_type,
        "pool": agent.pool,
        "market": agent.pool.rsplit("/", 1)[-1],
        "state": "running",
        "tags": tags,
        "managed": tags.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE,
        "workload": tags.get(WORKLOAD_TAG) or agent.workload,
        "role": tags.get(ROLE_TAG),
        "launch_time": None,
        "private_ip": (agent.instance_metadata or {}).get("private_ip"),
        "public_ip": (agent.instance_metadata or {}).get("public_ip"),
        "reported_by": agent.agent_id,
        "updated_at": now,
        "demoted_at": None,
    })


def _apply_metadata(
    agent: AgentRow, metadata: dict[str, Any], launch_config: LaunchConfig | None, version: str
) -> None:
    agent.instance_metadata = metadata
    agent.region = metadata["region"]
    agent.az = metadata["availability_zone"]
    agent.instance_type = metadata["instance_type"]
    agent.pool = f"{metadata['region']}/{metadata['instance_type']}/{metadata['availability_zone']}/" + str(
        metadata.get("lifecycle") or "on-demand"
    )
    if launch_config is not None:
        agent.launch_config = launch_config.model_dump(mode="json")
    agent.version = version


def _back_online(session: Session, agent: AgentRow, now: datetime, how: str) -> None:
    if agent.state == AgentState.OFFLINE.value:
        emit(
            session,
            EventKind.AGENT_ONLINE,
            f"agent {agent.agent_id} ({agent.instance_id}) is back online ({how})",
            now=now,
            workload=agent.workload,
            agent_id=agent.agent_id,
        )


def reconnect(
    session: Session, agent: AgentRow, req: ReconnectRequest, settings: ServerSettings, now: datetime
) -> ReconnectResponse:
    if req.metadata.instance_id != agent.instance_id:
        raise Forbidden(
            f"agent {agent.agent_id} belongs to instance {agent.instance_id}, "
            f"not {req.metadata.instance_id}: register this instance instead"
        )
    _apply_metadata(agent, req.metadata.model_dump(mode="json"), req.launch_config, req.version)
    _record_own_instance(session, agent, req.launch_config, now)
    _back_online(session, agent, now, "reconnect")
    if agent.state == AgentState.OFFLINE.value:
        agent.state = AgentState.ONLINE_READY.value
    agent.last_heartbeat_at = now
    agent.last_seen_at = now
    emit(
        session,
        EventKind.AGENT_RECONNECTED,
        f"agent {agent.agent_id} ({agent.instance_id}) reconnected, version {req.version}",
        now=now,
        workload=agent.workload,
        agent_id=agent.agent_id,
    )
    session.commit()
    return ReconnectResponse(
        agent_id=agent.agent_id,
        workload=agent.workload,
        toggles=Toggles.model_validate(agent.toggles),
        heartbeat_interval_s=settings.heartbeat_interval_s,
    )


def workload_toggle_source(session: Session, workload: str) -> AgentRow | None:
    """The agent whose toggles speak for `workload`: the live primary's, else the newest agent's."""
    agents = session.scalars(
        select(AgentRow).where(AgentRow.workload == workload).order_by(AgentRow.registered_at.desc())
    ).all()
    for agent in agents:
        if agent.role == "primary" and agent.state not in (AgentState.OFFLINE.value, AgentState.TERMINATED.value):
            return agent
    return agents[0] if agents else None


def heartbeat(
    session: Session, agent: AgentRow, req: HeartbeatRequest, settings: ServerSettings, now: datetime
) -> HeartbeatResponse:
    if req.instance_id != agent.instance_id:
        raise Forbidden(
            f"agent {agent.agent_id} runs on instance {agent.instance_id}; "
            f"it cannot heartbeat for instance {req.instance_id}"
        )
    _back_online(session, agent, now, "heartbeat")
    reported = req.state if req.state != AgentState.OFFLINE else AgentState.ONLINE_READY
    if agent.state not in (reported.value, AgentState.OFFLINE.value):
        emit(
            session,
            EventKind.AGENT_STATE_CHANGED,
            f"agent {agent.agent_id} state {agent.state} -> {reported.value}",
            now=now,
            workload=agent.workload,
            agent_id=agent.agent_id,
            data={"from": agent.state, "to": reported.value},
        )
    new_role = req.role.value if req.role else None
    if new_role != agent.role and new_role is not None:
        emit(
            session,
            EventKind.ROLE_CHANGED,
            f"instance {agent.instance_id} role {agent.role or 'none'} -> {new_role}",
            now=now,
            workload=agent.workload,
            agent_id=agent.agent_id,
            data={"instance_id": agent.instance_id, "from": agent.role, "to": new_role},
        )
        agent.role = new_role
    agent.state = reported.value
    agent.pool = req.pool or agent.pool
    agent.version = req.version
    agent.last_heartbeat_at = now
    agent.last_seen_at = now
    session.commit()
    commands = command_service.lease_for_agent(session, agent, settings, now)
    return HeartbeatResponse(
        toggles=Toggles.model_validate(agent.toggles),
        commands=commands,
        heartbeat_interval_s=settings.heartbeat_interval_s,
    )


def mark_offline(session: Session, settings: ServerSettings, now: datetime) -> list[str]:
    """Agents whose heartbeats stopped for `offline_after_missed` intervals become OFFLINE."""
    cutoff = now - timedelta(seconds=settings.offline_after_s)
    stale = session.execute(
        select(AgentRow.agent_id, AgentRow.last_heartbeat_at, AgentRow.workload, AgentRow.instance_id).where(
            AgentRow.state.not_in([AgentState.OFFLINE.value, AgentState.TERMINATED.value]),
            AgentRow.last_heartbeat_at < cutoff,
        )
    ).all()
    changed: list[str] = []
    for agent_id, last, workload, instance_id in stale:
        # Guarded: a heartbeat that landed meanwhile changed last_heartbeat_at, so this matches nothing.
        result = session.execute(
            update(AgentRow)
            .where(AgentRow.agent_id == agent_id, AgentRow.last_heartbeat_at == last)
            .values(state=AgentState.OFFLINE.value)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            changed.append(agent_id)
            emit(
                session,
                EventKind.AGENT_OFFLINE,
                f"agent {agent_id} ({instance_id}) is OFFLINE: no heartbeat since {last.isoformat()}",
                now=now,
                workload=workload,
                agent_id=agent_id,
                data={"last_heartbeat": last.isoformat()},
            )
            logger.warning("agent %s (%s) went OFFLINE", agent_id, instance_id)
    session.commit()
    return changed


def get_agent(session: Session, agent_id: str) -> AgentRow:
    agent = session.get(AgentRow, agent_id)
    if agent is None:
        raise NotFound(f"unknown agent {agent_id!r}")
    return agent


def list_agents(session: Session, *, workload: str | None = None) -> list[AgentRow]:
    query = select(AgentRow).order_by(AgentRow.registered_at, AgentRow.agent_id)
    if workload:
        query = query.where(AgentRow.workload == workload)
    return list(session.scalars(query))


def set_toggles(session: Session, agent_id: str, changes: dict[str, bool], now: datetime) -> AgentRow:
    agent = get_agent(session, agent_id)
    old = Toggles.model_validate(agent.toggles)
    new = old.model_copy(update=changes)
    if new != old:
        agent.toggles = new.model_dump()
        emit(
            session,
            EventKind.TOGGLES_CHANGED,
            f"toggles of agent {agent_id} changed: "
            + ", ".join(f"{k}={v}" for k, v in new.model_dump().items() if getattr(old, k) != v),
            now=now,
            workload=agent.workload,
            agent_id=agent_id,
            data={"from": old.model_dump(), "to": new.model_dump()},
        )
    session.commit()
    return agent


def list_workloads(session: Session) -> list[WorkloadRow]:
    return list(session.scalars(select(WorkloadRow).order_by(WorkloadRow.name)))
