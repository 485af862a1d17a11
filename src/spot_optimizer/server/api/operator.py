"""The operator API (admin token): look at everything, set toggles, issue manual commands."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query, status
from sqlalchemy.orm import Session

from spot_optimizer.server.api.deps import get_session, get_settings, now, require_admin
from spot_optimizer.server.api.schemas import (
    AgentOut,
    CommandCreate,
    CommandOut,
    DecisionOut,
    EventOut,
    InstanceOut,
    NoticeOut,
    OnDemandPriceOut,
    PricesOut,
    SpotPriceOut,
    TogglesPatch,
    TogglesPut,
    TokenCreate,
    TokenOut,
    WorkloadOut,
    WorkloadPolicyOut,
)
from spot_optimizer.server.decisions import policy as decision_policy
from spot_optimizer.server.decisions.policy import WorkloadPolicy
from spot_optimizer.server.errors import NotFound
from spot_optimizer.server.services import agents, commands, decisions, events, reports, tokens
from spot_optimizer.server.settings import ServerSettings

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["operator"], dependencies=[Depends(require_admin)])


@router.get("/workloads", response_model=list[WorkloadOut])
def list_workloads(session: Session = Depends(get_session)) -> list[WorkloadOut]:
    return [WorkloadOut.model_validate(w) for w in agents.list_workloads(session)]


@router.get("/workloads/{name}/policy", response_model=WorkloadPolicyOut)
def get_workload_policy(
    name: str, session: Session = Depends(get_session), at: datetime = Depends(now)
) -> WorkloadPolicyOut:
    return WorkloadPolicyOut.model_validate(decision_policy.effective(session, name, at))


@router.put("/workloads/{name}/policy", response_model=WorkloadPolicyOut)
def put_workload_policy(
    name: str, body: WorkloadPolicy, session: Session = Depends(get_session), at: datetime = Depends(now)
) -> WorkloadPolicyOut:
    decision_policy.set_policy(session, name, body, at)
    return WorkloadPolicyOut.model_validate(decision_policy.effective(session, name, at))


@router.get("/agents", response_model=list[AgentOut])
def list_agents(
    workload: str | None = None,
    session: Session = Depends(get_session),
    settings: ServerSettings = Depends(get_settings),
    at: datetime = Depends(now),
) -> list[AgentOut]:
    agents.mark_offline(session, settings, at)  # liveness is also computed on read
    return [AgentOut.model_validate(a) for a in agents.list_agents(session, workload=workload)]


@router.get("/agents/{agent_id}", response_model=AgentOut)
def get_agent(
    agent_id: str,
    session: Session = Depends(get_session),
    settings: ServerSettings = Depends(get_settings),
    at: datetime = Depends(now),
) -> AgentOut:
    agents.mark_offline(session, settings, at)
    return AgentOut.model_validate(agents.get_agent(session, agent_id))


@router.put("/agents/{agent_id}/toggles", response_model=AgentOut)
def put_toggles(
    agent_id: str, body: TogglesPut, session: Session = Depends(get_session), at: datetime = Depends(now)
) -> AgentOut:
    return AgentOut.model_validate(agents.set_toggles(session, agent_id, body.model_dump(), at))


@router.patch("/agents/{agent_id}/toggles", response_model=AgentOut)
def patch_toggles(
    agent_id: str, body: TogglesPatch, session: Session = Depends(get_session), at: datetime = Depends(now)
) -> AgentOut:
    changes = body.model_dump(exclude_none=True)
    return AgentOut.model_validate(agents.set_toggles(session, agent_id, changes, at))


@router.get("/instances", response_model=list[InstanceOut])
def list_instances(workload: str | None = None, session: Session = Depends(get_session)) -> list[InstanceOut]:
    return [InstanceOut.model_validate(i) for i in reports.list_instances(session, workload=workload)]


@router.get("/prices", response_model=PricesOut)
def list_prices(instance_type: str | None = None, session: Session = Depends(get_session)) -> PricesOut:
    return PricesOut(
        spot=[
            SpotPriceOut.model_validate(p)
            for p in reports.latest_spot_prices(session, instance_type=instance_type)
        ],
        ondemand=[
            OnDemandPriceOut.model_validate(p)
            for p in reports.ondemand_prices(session, instance_type=instance_type)
        ],
    )


@router.get("/notices", response_model=list[NoticeOut])
def list_notices(
    workload: str | None = None, agent_id: str | None = None, session: Session = Depends(get_session)
) -> list[NoticeOut]:
    rows = reports.list_notices(session, workload=workload, agent_id=agent_id)
    return [NoticeOut.model_validate(n) for n in rows]


@router.get("/commands", response_model=list[CommandOut])
def list_commands(
    agent_id: str | None = None,
    workload: str | None = None,
    status: str | None = None,
    limit: int = Query(1000, ge=1, le=10_000),
    session: Session = Depends(get_session),
    at: datetime = Depends(now),
) -> list[CommandOut]:
    commands.expire_due(session, at)  # expiry is also computed on read
    rows = commands.list_commands(session, agent_id=agent_id, workload=workload, status=status, limit=limit)
    return [CommandOut.model_validate(c) for c in rows]


@router.get("/commands/{command_id}", response_model=CommandOut)
def get_command(
    command_id: str, session: Session = Depends(get_session), at: datetime = Depends(now)
) -> CommandOut:
    commands.expire_due(session, at)
    return CommandOut.model_validate(commands.get_command(session, command_id))


@router.post("/commands", response_model=CommandOut, status_code=status.HTTP_201_CREATED)
def create_command(
    body: CommandCreate,
    session: Session = Depends(get_session),
    settings: ServerSettings = Depends(get_settings),
    at: datetime = Depends(now),
) -> CommandOut:
    row = commands.issue_command(
        session,
        agent_id=body.agent_id,
        command_type=body.type,
        params=body.params,
        settings=settings,
        now=at,
        reason=body.reason,
        deadline_s=body.deadline_s,
    )
    return CommandOut.model_validate(row)


@router.get("/events", response_model=list[EventOut])
def list_events(
    workload: str | None = None,
    agent_id: str | None = None,
    since: datetime | None = Query(None, description="ISO 8601; naive times are UTC"),
    kind: str | None = None,
    limit: int = Query(1000, ge=1, le=10_000),
    session: Session = Depends(get_session),
) -> list[EventOut]:
    rows = events.list_events(
        session, workload=workload, agent_id=agent_id, since=_aware(since), kind=kind, limit=limit
    )
    return [EventOut.model_validate(e) for e in rows]


@router.get("/decisions", response_model=list[DecisionOut])
def list_decisions(workload: str | None = None, session: Session = Depends(get_session)) -> list[DecisionOut]:
    return [DecisionOut.model_validate(d) for d in decisions.list_decisions(session, workload=workload)]


@router.post("/tokens", response_model=TokenOut, status_code=status.HTTP_201_CREATED)
def create_token(
    body: TokenCreate, session: Session = Depends(get_session), at: datetime = Depends(now)
) -> TokenOut:
    plain = tokens.create_token(session, body.kind, at, note=body.note)
    return TokenOut(kind=body.kind, token=plain, id=tokens.token_id(session, plain))


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(token_id: int, session: Session = Depends(get_session), at: datetime = Depends(now)) -> None:
    if not tokens.revoke_token(session, token_id, at):
        raise NotFound(f"unknown token id {token_id}")
    logger.warning("token %d revoked", token_id)


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
