"""A workload's policy for the decision loop: allowed instance types and AZs, and engine settings.

Stored on the workload row; unset parts take defaults at decision time: the primary's instance type,
in every AZ of the region that the inventory, the prices or the agents have shown.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from spot_optimizer.core.policy import Settings
from spot_optimizer.server.errors import NotFound, Unprocessable
from spot_optimizer.server.models import AgentRow, InstanceRow, SpotPriceRow, WorkloadRow
from spot_optimizer.server.services.commands import describe_validation_error
from spot_optimizer.server.services.events import EventKind, emit


class WorkloadPolicy(BaseModel):
    """What the operator sets; None means "the default"."""

    model_config = ConfigDict(extra="forbid")

    instance_types: list[str] | None = Field(default=None, min_length=1)
    azs: list[str] | None = Field(default=None, min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict, description="overrides of core.policy.Settings")


def stored_policy(row: WorkloadRow) -> WorkloadPolicy:
    return WorkloadPolicy.model_validate(row.policy or {})


def engine_settings(policy: WorkloadPolicy) -> Settings:
    return Settings.model_validate(policy.settings)


def set_policy(session: Session, name: str, policy: WorkloadPolicy, now: datetime) -> WorkloadRow:
    row = session.get(WorkloadRow, name)
    if row is None:
        raise NotFound(f"unknown workload {name!r}")
    try:
        engine_settings(policy)
    except ValidationError as exc:
        raise Unprocessable(f"invalid policy settings: {describe_validation_error(exc)}") from exc
    old = row.policy or {}
    row.policy = policy.model_dump(mode="json")
    if row.policy != old:
        emit(
            session,
            EventKind.POLICY_CHANGED,
            f"policy of workload {name} changed: types={policy.instance_types or 'default'}, "
            f"azs={policy.azs or 'default'}, settings={policy.settings or 'default'}",
            now=now,
            workload=name,
            data={"from": old, "to": row.policy},
        )
    session.commit()
    return row


def region_azs(session: Session, region: str) -> list[str]:
    """Every AZ of `region` that the inventory, the spot prices or an agent has shown."""
    found: set[str] = set()
    found.update(session.scalars(select(InstanceRow.az).where(InstanceRow.region == region).distinct()))
    found.update(session.scalars(select(SpotPriceRow.az).where(SpotPriceRow.region == region).distinct()))
    found.update(session.scalars(select(AgentRow.az).where(AgentRow.region == region).distinct()))
    return sorted(a for a in found if a)


def allowed(
    session: Session, policy: WorkloadPolicy, region: str, primary_type: str | None, primary_az: str | None
) -> tuple[list[str], list[str]]:
    """(instance types, AZs) the engine may use for this workload."""
    types = list(policy.instance_types or ([primary_type] if primary_type else []))
    azs = list(policy.azs or region_azs(session, region))
    if not policy.azs and primary_az and primary_az not in azs:
        azs.append(primary_az)
    return types, azs


def effective(session: Session, name: str, now: datetime) -> dict[str, object]:
    """The stored policy and what the decision loop uses now (defaults filled in)."""
    from spot_optimizer.server.decisions.state import effective_policy  # state builds on this module

    row = session.get(WorkloadRow, name)
    if row is None:
        raise NotFound(f"unknown workload {name!r}")
    return effective_policy(session, row, now)
