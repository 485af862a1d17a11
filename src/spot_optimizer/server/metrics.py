"""Prometheus metrics. Each app has its own registry, so several apps (tests) can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spot_optimizer.server.models import AgentRow, CommandRow


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "spot_optimizer_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.agents = Gauge("spot_optimizer_agents", "Agents by state", ["state"], registry=self.registry)
        self.commands = Gauge(
            "spot_optimizer_commands", "Commands by status", ["status"], registry=self.registry
        )

    def render(self, session: Session) -> bytes:
        self.agents.clear()
        for state, count in session.execute(select(AgentRow.state, func.count()).group_by(AgentRow.state)):
            self.agents.labels(state=state).set(count)
        self.commands.clear()
        for status, count in session.execute(
            select(CommandRow.status, func.count()).group_by(CommandRow.status)
        ):
            self.commands.labels(status=status).set(count)
        return generate_latest(self.registry)
