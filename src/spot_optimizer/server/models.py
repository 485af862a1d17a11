"""SQLAlchemy 2 tables of the control plane. Times are stored as naive UTC and read back as aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class TokenRow(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # admin | enrollment
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    created_at: Mapped[datetime]
    note: Mapped[str | None] = mapped_column(String(200))
    revoked_at: Mapped[datetime | None]


class WorkloadRow(Base):
    __tablename__ = "workloads"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime]
    launch_config: Mapped[dict[str, Any] | None]
    allowed_pools: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # The operator's policy for the decision loop: {"instance_types", "azs", "settings"} (0002).
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class AgentRow(Base):
    __tablename__ = "agents"

    agent_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    instance_id: Mapped[str] = mapped_column(String(64), unique=True)
    workload: Mapped[str] = mapped_column(ForeignKey("workloads.name"), index=True)
    region: Mapped[str] = mapped_column(String(32))
    az: Mapped[str] = mapped_column(String(32))
    instance_type: Mapped[str] = mapped_column(String(64))
    pool: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(32))
    role: Mapped[str | None] = mapped_column(String(16))
    version: Mapped[str] = mapped_column(String(64))
    toggles: Mapped[dict[str, Any]]
    instance_metadata: Mapped[dict[str, Any]]
    launch_config: Mapped[dict[str, Any] | None]
    registered_at: Mapped[datetime]
    last_heartbeat_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime]


class CommandRow(Base):
    __tablename__ = "commands"
    __table_args__ = (Index("ix_commands_agent_status", "agent_id", "status"),)

    command_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.agent_id"))
    workload: Mapped[str] = mapped_column(String(128), index=True)
    type: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))  # manual | engine | autonomous
    issued_at: Mapped[datetime]
    deadline: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    delivery_count: Mapped[int] = mapped_column(Integer, default=0)
    finished_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    workload: Mapped[str | None] = mapped_column(String(128), index=True)
    agent_id: Mapped[str | None] = mapped_column(String(32), index=True)
    command_id: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]]


class DecisionRow(Base):
    __tablename__ = "decisions"

    decision_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workload: Mapped[str] = mapped_column(String(128), index=True)
    ts: Mapped[datetime] = mapped_column(index=True)
    actions: Mapped[list[Any]] = mapped_column(JSON)
    rationale: Mapped[list[Any]] = mapped_column(JSON)


class InstanceRow(Base):
    __tablename__ = "instances"

    instance_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    region: Mapped[str] = mapped_column(String(32))
    az: Mapped[str] = mapped_column(String(32))
    instance_type: Mapped[str] = mapped_column(String(64))
    pool: Mapped[str] = mapped_column(String(200))
    market: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(32))
    tags: Mapped[dict[str, Any]]
    managed: Mapped[bool] = mapped_column(Boolean)
    workload: Mapped[str | None] = mapped_column(String(128), index=True)
    role: Mapped[str | None] = mapped_column(String(16))
    launch_time: Mapped[str | None] = mapped_column(String(64))
    private_ip: Mapped[str | None] = mapped_column(String(64))
    public_ip: Mapped[str | None] = mapped_column(String(64))
    reported_by: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime]
    # Set when the decision loop demoted it (a retag the server records itself); inventory reports
    # do not touch it, a later promotion of this instance clears it (0002).
    demoted_at: Mapped[datetime | None] = mapped_column(nullable=True)


class NoticeRow(Base):
    __tablename__ = "notices"

    notice_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(32), index=True)
    workload: Mapped[str] = mapped_column(String(128), index=True)
    instance_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]]
    detected_at: Mapped[datetime]
    action_time: Mapped[datetime | None]
    received_at: Mapped[datetime]


class SpotPriceRow(Base):
    __tablename__ = "spot_prices"
    __table_args__ = (Index("uq_spot_prices_point", "region", "instance_type", "az", "ts", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    region: Mapped[str] = mapped_column(String(32))
    instance_type: Mapped[str] = mapped_column(String(64))
    az: Mapped[str] = mapped_column(String(32))
    price: Mapped[float] = mapped_column(Float)
    ts: Mapped[datetime]
    received_at: Mapped[datetime]


class OnDemandPriceRow(Base):
    __tablename__ = "ondemand_prices"

    region: Mapped[str] = mapped_column(String(32), primary_key=True)
    instance_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    price: Mapped[float] = mapped_column(Float)
    estimated: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime]


class LeaderRow(Base):
    """A lease: the server process holding `name` until `expires_at` runs that singleton job (0002)."""

    __tablename__ = "leader"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]
    acquired_at: Mapped[datetime]
