"""Request-scoped dependencies: the database session, settings, the clock and authentication."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from spot_optimizer.server.errors import Unauthorized
from spot_optimizer.server.models import AgentRow
from spot_optimizer.server.services import agents as agent_service
from spot_optimizer.server.services.tokens import TokenKind, token_is_valid
from spot_optimizer.server.settings import ServerSettings


def get_session(request: Request) -> Iterator[Session]:
    session: Session = request.app.state.session_factory()
    try:
        yield session
    finally:
        session.close()


def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def now(request: Request) -> datetime:
    return request.app.state.settings.clock()  # type: ignore[no-any-return]


def bearer_token(request: Request, what: str) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthorized(f"missing Authorization header: send 'Authorization: Bearer <{what}>'")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(f"malformed Authorization header: expected 'Bearer <{what}>'")
    return token.strip()


def current_agent(agent_id: str, request: Request, session: Session = Depends(get_session)) -> AgentRow:
    secret = bearer_token(request, "agent secret")
    return agent_service.authenticate(session, agent_id, secret)


def require_admin(request: Request, session: Session = Depends(get_session)) -> None:
    token = bearer_token(request, "admin token")
    if not token_is_valid(session, TokenKind.ADMIN, token):
        raise Unauthorized("admin token is not valid")
