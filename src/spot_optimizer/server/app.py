"""The control plane's FastAPI application: `create_app(settings)`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spot_optimizer import __version__
from spot_optimizer.server import db
from spot_optimizer.server.api import agent as agent_api
from spot_optimizer.server.api import operator as operator_api
from spot_optimizer.server.api.deps import get_session
from spot_optimizer.server.api.openapi import install_error_schemas
from spot_optimizer.server.decisions import loop as decision_loop
from spot_optimizer.server.errors import ApiError
from spot_optimizer.server.metrics import Metrics
from spot_optimizer.server.services import agents as agent_service
from spot_optimizer.server.services import commands as command_service
from spot_optimizer.server.services.tokens import TokenKind, seed_token
from spot_optimizer.server.settings import ServerSettings
from spot_optimizer.server.web import router as web_router

logger = logging.getLogger(__name__)


class BodyLimitMiddleware:
    """Refuse request bodies over `limit` bytes with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = f"request body is larger than the limit of {self.limit} bytes"
        logger.warning("%s %s -> 413: %s", scope.get("method"), scope.get("path"), message)
        response = JSONResponse({"detail": message}, status_code=413)
        await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    # Drop the echoed input: it can hold a token or a secret.
    return [{k: v for k, v in dict(err).items() if k in ("type", "loc", "msg")} for err in errors]


def _summary(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid":
            parts.append(f"malformed JSON body: {err.get('msg')}")
        else:
            loc = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"


def sweep_once(app: FastAPI) -> None:
    """Mark silent agents OFFLINE and expire overdue commands, in short transactions."""
    settings: ServerSettings = app.state.settings
    with app.state.session_factory() as session:
        agent_service.mark_offline(session, settings, settings.clock())
        command_service.expire_due(session, settings.clock())


async def _sweep_loop(app: FastAPI, period: float) -> None:
    while True:
        await asyncio.sleep(period)
        try:
            await run_in_threadpool(sweep_once, app)
        except Exception:
            logger.exception("liveness/expiry sweep failed; retrying in %.1f s", period)


def create_app(settings: ServerSettings) -> FastAPI:
    engine = db.make_engine(settings.db_url)
    if settings.upgrade_on_start:
        db.upgrade(settings.db_url, engine)
    session_factory = db.make_session_factory(engine)
    with session_factory() as session:
        now = settings.clock()
        if settings.admin_token:
            seed_token(session, TokenKind.ADMIN, settings.admin_token, now)
        if settings.enrollment_token:
            seed_token(session, TokenKind.ENROLLMENT, settings.enrollment_token, now)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        period = (
            settings.heartbeat_interval_s if settings.sweep_interval_s is None else settings.sweep_interval_s
        )
        task = asyncio.create_task(_sweep_loop(app, period)) if period > 0 else None
        decision_task = decision_loop.start(app)
        try:
            yield
        finally:
            await decision_loop.stop(app, decision_task)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            engine.dispose()

    app = FastAPI(
        title="Spot Optimizer control plane",
        version=__version__,
        description="Agent API under /api/v1/agent (agent secret); operator API under /api/v1 (admin token).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory
    app.state.metrics = Metrics()
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        app.state.metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        logger.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.message)
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean_errors(exc.errors())
        message = _summary(errors)
        logger.warning("%s %s -> 422: %s", request.method, request.url.path, message)
        return JSONResponse({"detail": message, "errors": errors}, status_code=422)

    @app.exception_handler(IntegrityError)
    async def conflict(request: Request, exc: IntegrityError) -> JSONResponse:
        logger.warning(
            "%s %s -> 409: concurrent write conflict: %s", request.method, request.url.path, exc.orig
        )
        return JSONResponse({"detail": "conflicting concurrent write; retry the request"}, status_code=409)

    @app.get("/healthz", tags=["health"])
    def healthz(session: Session = Depends(get_session)) -> dict[str, str]:
        session.execute(text("SELECT 1"))
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics(session: Session = Depends(get_session)) -> Response:
        return Response(app.state.metrics.render(session), media_type=CONTENT_TYPE_LATEST)

    app.include_router(agent_api.router)
    app.include_router(operator_api.router)
    app.include_router(web_router)
    install_error_schemas(app)
    return app
