"""The agent API: /api/v1/agent/... (see spot_optimizer.core.protocol)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from spot_optimizer.core.protocol import (
    API_PREFIX,
    Ack,
    HeartbeatRequest,
    HeartbeatResponse,
    InventoryRequest,
    NoticesRequest,
    PricesRequest,
    ReconnectRequest,
    ReconnectResponse,
    RegisterRequest,
    RegisterResponse,
    ResultsRequest,
)
from spot_optimizer.server.api.deps import current_agent, get_session, get_settings, now
from spot_optimizer.server.decisions import loop as decision_loop
from spot_optimizer.server.models import AgentRow
from spot_optimizer.server.services import agents, commands, reports
from spot_optimizer.server.settings import ServerSettings

router = APIRouter(prefix=API_PREFIX, tags=["agent"])

# How long a notice POST waits for the decision pass it woke (well under the agent's 5 s request timeout).
NOTICE_DECISION_WAIT_S = 2.0


@router.post("/register", response_model=RegisterResponse)
def register(
    body: RegisterRequest,
    session: Session = Depends(get_session),
    settings: ServerSettings = Depends(get_settings),
    at: datetime = Depends(now),
) -> RegisterResponse:
    return agents.register(session, body, settings, at)


@router.post("/{agent_id}/reconnect", response_model=ReconnectResponse)
def reconnect(
    body: ReconnectRequest,
    agent: AgentRow = Depends(current_agent),
    session: Session = Depends(get_session),
    settings: ServerSettings = Depends(get_settings),
    at: datetime = Depends(now),
) -> ReconnectResponse:
    return agents.reconnect(session, agent, body, settings, at)


@router.post("/{agent_id}/heartbeat", response_model=HeartbeatResponse)
def heartbeat(
    request: Request,
    body: HeartbeatRequest,
    agent: AgentRow = Depends(current_agent),
    session: Session = Depends(get_session),
    settings: ServerSettings = Depends(get_settings),
    at: datetime = Depends(now),
) -> HeartbeatResponse:
    response = agents.heartbeat(session, agent, body, settings, at)
    response.policy = getattr(request.app.state, "decision_policies", {}).get(agent.workload)
    return response


@router.post("/{agent_id}/results", response_model=Ack)
def results(
    body: ResultsRequest,
    agent: AgentRow = Depends(current_agent),
    session: Session = Depends(get_session),
    at: datetime = Depends(now),
) -> Ack:
    return commands.record_results(session, agent, body.results, at)


@router.post("/{agent_id}/notices", response_model=Ack)
def notices(
    body: NoticesRequest,
    request: Request,
    agent: AgentRow = Depends(current_agent),
    session: Session = Depends(get_session),
    at: datetime = Depends(now),
) -> Ack:
    ack = reports.record_notices(session, agent, body, at)
    if ack.accepted:
        # Decide now, not at the next tick, and answer once that pass is done (bounded): the agent heartbeats
        # right after this answer, so its launch or promotion comes back with that very heartbeat.
        ticket = decision_loop.wake(request.app, agent.workload)
        decision_loop.wait_for_pass(request.app, ticket, NOTICE_DECISION_WAIT_S)
    return ack


@router.post("/{agent_id}/prices", response_model=Ack)
def prices(
    body: PricesRequest,
    agent: AgentRow = Depends(current_agent),
    session: Session = Depends(get_session),
    at: datetime = Depends(now),
) -> Ack:
    return reports.record_prices(session, agent, body, at)


@router.post("/{agent_id}/inventory", response_model=Ack)
def inventory(
    body: InventoryRequest,
    agent: AgentRow = Depends(current_agent),
    session: Session = Depends(get_session),
    at: datetime = Depends(now),
) -> Ack:
    return reports.record_inventory(session, agent, body, at)
