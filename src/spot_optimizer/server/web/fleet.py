"""What the dashboard shows about workloads: their instances and agents, hourly cost and savings to date.

Prices come from what agents reported (spot price history and on-demand prices). Savings to date compare
each spot instance's cost, integrated over its running time with the spot price in force at each moment,
with the on-demand price of the same instance type over the same time — the definition AWS uses for its
own spot savings summary. An on-demand price that agents only estimated is flagged, so the page says
"estimate".
"""

from __future__ import annotations

import bisect
import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from spot_optimizer.core.models import AgentState, Market, Pool
from spot_optimizer.server.models import AgentRow, InstanceRow, OnDemandPriceRow, SpotPriceRow, WorkloadRow

RUNNING_STATES = ("pending", "running")
PriceKey = tuple[str, str, str]  # region, instance type, az


@dataclass
class PriceBook:
    """Spot price history per (region, type, az) and on-demand prices per (region, type)."""

    spot: dict[PriceKey, list[tuple[datetime, float]]] = field(default_factory=dict)
    ondemand: dict[tuple[str, str], OnDemandPriceRow] = field(default_factory=dict)

    def spot_now(self, key: PriceKey) -> float | None:
        points = self.spot.get(key)
        return points[-1][1] if points else None

    def spot_at(self, key: PriceKey, when: datetime) -> float | None:
        points = self.spot.get(key)
        if not points:
            return None
        i = bisect.bisect_right([p[0] for p in points], when) - 1
        return points[max(i, 0)][1]

    def spot_cost(self, key: PriceKey, start: datetime, end: datetime) -> float | None:
        """Dollars paid for one instance in this pool from start to end (price steps at each point)."""
        points = self.spot.get(key)
        if not points or end <= start:
            return None if not points else 0.0
        total = 0.0
        cursor, price = start, self.spot_at(key, start) or points[0][1]
        for ts, value in points:
            if ts <= cursor:
                continue
            if ts >= end:
                break
            total += price * (ts - cursor).total_seconds() / 3600
            cursor, price = ts, value
        return total + price * (end - cursor).total_seconds() / 3600

    def od(self, region: str, instance_type: str) -> OnDemandPriceRow | None:
        return self.ondemand.get((region, instance_type))


def load_prices(session: Session, instance_types: set[str] | None = None) -> PriceBook:
    book = PriceBook()
    query = select(SpotPriceRow).order_by(SpotPriceRow.ts)
    od_query = select(OnDemandPriceRow)
    if instance_types is not None:
        query = query.where(SpotPriceRow.instance_type.in_(instance_types))
        od_query = od_query.where(OnDemandPriceRow.instance_type.in_(instance_types))
    spot: dict[PriceKey, list[tuple[datetime, float]]] = defaultdict(list)
    for row in session.scalars(query):
        spot[(row.region, row.instance_type, row.az)].append((row.ts, row.price))
    book.spot = dict(spot)
    book.ondemand = {(r.region, r.instance_type): r for r in session.scalars(od_query)}
    return book


@dataclass
class Member:
    """One instance of a workload, seen through the inventory and/or its agent."""

    instance_id: str
    role: str | None
    region: str
    instance_type: str
    az: str
    market: str
    state: str
    start: datetime
    end: datetime
    agent: AgentRow | None = None
    hourly: float | None = None  # what it costs now
    od_hourly: float | None = None
    od_estimated: bool = False
    saved: float | None = None  # savings to date against on-demand

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def pool(self) -> str:
        return f"{self.region}/{self.instance_type}/{self.az}/{self.market}"

    @property
    def price_key(self) -> PriceKey:
        return (self.region, self.instance_type, self.az)


@dataclass
class WorkloadView:
    name: str
    row: WorkloadRow
    members: list[Member]
    agents: list[AgentRow]
    hourly: float = 0.0
    od_hourly: float = 0.0
    saved: float = 0.0
    estimated: bool = False  # an on-demand price used is an estimate
    missing_prices: list[str] = field(default_factory=list)

    def with_role(self, role: str) -> list[Member]:
        return [m for m in self.members if m.role == role and m.running]

    @property
    def primary(self) -> Member | None:
        primaries = self.with_role("primary")
        return primaries[0] if primaries else None

    @property
    def online_agents(self) -> int:
        return sum(1 for a in self.agents if a.state not in (AgentState.OFFLINE.value, AgentState.TERMINATED.value))


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    with contextlib.suppress(ValueError):
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _members(instances: list[InstanceRow], agents: list[AgentRow], now: datetime) -> list[Member]:
    by_instance = {a.instance_id: a for a in agents}
    members: list[Member] = []
    for row in instances:
        agent = by_instance.pop(row.instance_id, None)
        running = row.state in RUNNING_STATES
        start = _parse_time(row.launch_time) or (agent.registered_at if agent else row.updated_at)
        members.append(
            Member(
                instance_id=row.instance_id,
                role=(agent.role if agent and agent.role else row.role),
                region=row.region,
                instance_type=row.instance_type,
                az=row.az,
                market=row.market,
                state=row.state,
                start=start,
                end=now if running else max(row.updated_at, start),
                agent=agent,
            )
        )
    for agent in by_instance.values():  # agents whose instance no inventory has reported yet
        market = Market.ON_DEMAND.value
        if agent.pool:
            with contextlib.suppress(ValueError):
                market = Pool.parse(agent.pool).market.value
        gone = agent.state == AgentState.TERMINATED.value
        members.append(
            Member(
                instance_id=agent.instance_id,
                role=agent.role,
                region=agent.region,
                instance_type=agent.instance_type,
                az=agent.az,
                market=market,
                state="terminated" if gone else "running",
                start=agent.registered_at,
                end=agent.last_seen_at if gone else now,
                agent=agent,
            )
        )
    role_order = {"primary": 0, "replica": 1, "zombie": 2}
    members.sort(key=lambda m: (not m.running, role_order.get(m.role or "", 3), m.instance_id))
    return members


def _price(view: WorkloadView, member: Member, book: PriceBook) -> None:
    od = book.od(member.region, member.instance_type)
    if od is not None:
        member.od_hourly, member.od_estimated = od.price, od.estimated
    if member.market == Market.SPOT.value:
        member.hourly = book.spot_now(member.price_key)
        paid = book.spot_cost(member.price_key, member.start, member.end)
        if paid is not None and od is not None:
            hours = max((member.end - member.start).total_seconds(), 0) / 3600
            member.saved = od.price * hours - paid
    else:
        member.hourly = member.od_hourly
        member.saved = 0.0
    if member.running:
        if member.hourly is None or member.od_hourly is None:
            view.missing_prices.append(member.pool)
        view.hourly += member.hourly or 0.0
        view.od_hourly += member.od_hourly or 0.0
        view.estimated |= member.od_estimated
    if member.saved is not None:
        view.saved += member.saved
        view.estimated |= member.od_estimated


def workload_views(session: Session, now: datetime, only: str | None = None) -> list[WorkloadView]:
    query = select(WorkloadRow).order_by(WorkloadRow.name)
    if only is not None:
        query = query.where(WorkloadRow.name == only)
    workloads = list(session.scalars(query))
    names = [w.name for w in workloads]
    instances: dict[str, list[InstanceRow]] = defaultdict(list)
    for inst in session.scalars(select(InstanceRow).where(InstanceRow.workload.in_(names))):
        instances[inst.workload or ""].append(inst)
    agents: dict[str, list[AgentRow]] = defaultdict(list)
    agent_query = select(AgentRow).where(AgentRow.workload.in_(names)).order_by(AgentRow.registered_at)
    for agent in session.scalars(agent_query):
        agents[agent.workload].append(agent)
    views = [
        WorkloadView(w.name, w, _members(instances[w.name], agents[w.name], now), agents[w.name])
        for w in workloads
    ]
    types = {m.instance_type for v in views for m in v.members}
    book = load_prices(session, types)
    for view in views:
        for member in view.members:
            _price(view, member, book)
    return views
