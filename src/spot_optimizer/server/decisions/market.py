"""Prices, risk and the waking event, read from the database for one workload.

Risk is the Spot Advisor bucket of each type, raised by the notices and capacity errors this system saw
in each pool (core.risk decays them). Capacity errors are failed launch commands whose result names the
pool; they are region-wide facts, so every workload's failures count.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from spot_optimizer.core.commands import CommandStatus, CommandType
from spot_optimizer.core.decision import Event, EventKind, MarketView, WorkloadView
from spot_optimizer.core.models import Market, NoticeKind, Pool
from spot_optimizer.core.risk import PoolEvent, PoolEventKind, RiskView, assess_risk
from spot_optimizer.server.decisions import advisor
from spot_optimizer.server.models import AgentRow, CommandRow, InstanceRow, NoticeRow
from spot_optimizer.server.services.reports import latest_spot_prices, ondemand_prices

# The error codes of a launch that failed for want of capacity in its pool (as aws/errors.py maps them).
CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity", "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded", "InsufficientReservedInstanceCapacity", "Unsupported", "CapacityError",
})
# Observations older than this many risk half-lives weigh under 1/64: not worth reading.
MEMORY_HALF_LIVES = 6


def market_view(session: Session, view: WorkloadView) -> MarketView:
    types = set(view.instance_types)
    spot: dict[str, float] = {}
    for row in latest_spot_prices(session):
        if row.region == view.region and row.instance_type in types:
            spot[Pool(region=row.region, instance_type=row.instance_type, az=row.az).pool_id] = row.price
    ondemand = {
        row.instance_type: row.price
        for row in ondemand_prices(session) if row.region == view.region and row.instance_type in types
    }
    return MarketView(spot=spot, ondemand=ondemand)


def _notice_pools(session: Session, since: datetime) -> list[tuple[str, str, datetime, str, str]]:
    """(pool, kind, received_at, workload, instance_id) of notices since `since`."""
    rows = session.execute(
        select(NoticeRow.instance_id, NoticeRow.kind, NoticeRow.received_at, NoticeRow.workload,
               InstanceRow.pool, AgentRow.pool)
        .join(InstanceRow, InstanceRow.instance_id == NoticeRow.instance_id, isouter=True)
        .join(AgentRow, AgentRow.agent_id == NoticeRow.agent_id, isouter=True)
        .where(NoticeRow.received_at >= since)
    ).all()
    found = []
    for instance_id, kind, at, workload, inst_pool, agent_pool in rows:
        pool_id = inst_pool or agent_pool
        if pool_id:
            found.append((str(pool_id), str(kind), at, str(workload), str(instance_id)))
    return found


def _capacity_errors(session: Session, since: datetime) -> list[tuple[str, datetime, str]]:
    """(pool, finished_at, workload) of launches that failed for want of capacity since `since`."""
    rows = session.execute(
        select(CommandRow.result, CommandRow.finished_at, CommandRow.workload).where(
            CommandRow.type == CommandType.LAUNCH.value,
            CommandRow.status == CommandStatus.FAILED.value,
            CommandRow.error_code.in_(CAPACITY_CODES),
            CommandRow.finished_at >= since,
        )
    ).all()
    return [(str(result["pool"]), at, workload) for result, at, workload in rows
            if isinstance(result, dict) and result.get("pool")]


def risk_view(session: Session, view: WorkloadView, advisor_path: str | None, now: datetime) -> RiskView:
    since = now - timedelta(seconds=view.settings.risk_half_life_s * MEMORY_HALF_LIVES)
    events: list[PoolEvent] = []
    for pool_id, kind, at, _, _ in _notice_pools(session, since):
        if kind in (NoticeKind.INTERRUPTION.value, NoticeKind.REBALANCE.value):
            events.append(PoolEvent(pool_id=pool_id, kind=PoolEventKind(kind), at=at))
    for pool_id, at, _ in _capacity_errors(session, since):
        events.append(PoolEvent(pool_id=pool_id, kind=PoolEventKind.CAPACITY_ERROR, at=at))
    pools = [Pool(region=view.region, instance_type=t, az=az, market=m)
             for t in view.instance_types for az in view.azs for m in (Market.SPOT, Market.ON_DEMAND)]
    return assess_risk(pools, advisor.buckets(advisor_path, view.region), events, now, view.settings)


def waking_event(session: Session, workload: str, since: datetime, now: datetime) -> Event:
    """The newest notice or capacity error of the workload since the last run; a tick when none."""
    best: Event | None = None
    for pool_id, kind, at, owner, instance_id in _notice_pools(session, since):
        if owner != workload or kind not in (NoticeKind.INTERRUPTION.value, NoticeKind.REBALANCE.value):
            continue
        if best is None or at > best.at:
            best = Event(kind=EventKind(kind), at=at, instance_id=instance_id, pool_id=pool_id)
    for pool_id, at, owner in _capacity_errors(session, since):
        if owner == workload and (best is None or at > best.at):
            best = Event(kind=EventKind.CAPACITY_ERROR, at=at, pool_id=pool_id)
    return best or Event(kind=EventKind.TICK, at=now)

