"""What agents report besides heartbeats: notices, prices and the region's inventory."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spot_optimizer.core.models import WORKLOAD_TAG
from spot_optimizer.core.protocol import Ack, InventoryRequest, NoticesRequest, PricesRequest
from spot_optimizer.server.errors import Forbidden
from spot_optimizer.server.models import AgentRow, InstanceRow, NoticeRow, OnDemandPriceRow, SpotPriceRow
from spot_optimizer.server.services.events import EventKind, emit
from spot_optimizer.server.services.sql import insert_ignore, upsert

logger = logging.getLogger(__name__)


def record_notices(session: Session, agent: AgentRow, req: NoticesRequest, now: datetime) -> Ack:
    for notice in req.notices:
        if notice.instance_id != agent.instance_id:
            raise Forbidden(
                f"agent {agent.agent_id} runs on {agent.instance_id}; "
                f"it cannot report a notice for instance {notice.instance_id}"
            )
    accepted = 0
    for notice in req.notices:
        inserted = insert_ignore(
            session,
            NoticeRow,
            {
                "notice_id": notice.notice_id,
                "agent_id": agent.agent_id,
                "workload": agent.workload,
                "instance_id": notice.instance_id,
                "kind": notice.kind.value,
                "payload": notice.payload,
                "detected_at": notice.detected_at,
                "action_time": notice.action_time,
                "received_at": now,
            },
        )
        if inserted:
            accepted += 1
            emit(
                session,
                EventKind.NOTICE_RECEIVED,
                f"{notice.kind.value} notice for instance {notice.instance_id}"
                + (f", action at {notice.action_time.isoformat()}" if notice.action_time else ""),
                now=now,
                workload=agent.workload,
                agent_id=agent.agent_id,
                data={"notice_id": notice.notice_id, "kind": notice.kind.value, "payload": notice.payload},
            )
    session.commit()
    return Ack(accepted=accepted, duplicates=len(req.notices) - accepted)


def record_prices(session: Session, agent: AgentRow, req: PricesRequest, now: datetime) -> Ack:
    accepted = 0
    for sp in req.spot:
        accepted += insert_ignore(
            session,
            SpotPriceRow,
            {
                "region": agent.region,
                "instance_type": sp.instance_type,
                "az": sp.az,
                "price": sp.price,
                "ts": sp.timestamp,
                "received_at": now,
            },
        )
    for od in req.ondemand:
        upsert(
            session,
            OnDemandPriceRow,
            {
                "region": od.region,
                "instance_type": od.instance_type,
                "price": od.price,
                "estimated": od.estimated,
                "source": od.source,
                "updated_at": now,
            },
            keys=("region", "instance_type"),
        )
        accepted += 1
    session.commit()
    total = len(req.spot) + len(req.ondemand)
    return Ack(accepted=accepted, duplicates=total - accepted)


def record_inventory(session: Session, agent: AgentRow, req: InventoryRequest, now: datetime) -> Ack:
    # A listing taken before the server learnt something newer of an instance (a promotion's result, a
    # launch) must not put the old tags back: such rows are left as they are. Agent and server clocks are
    # compared here, so they are assumed to be NTP-synchronised, as EC2 instances are.
    taken = req.collected_at
    if taken is not None and taken.tzinfo is None:  # the database takes aware UTC times only
        taken = taken.replace(tzinfo=UTC)
    ids = [i.instance_id for i in req.instances]
    newer: set[str] = set()
    if taken is not None and ids:
        newer = {iid for iid, updated in session.execute(
            select(InstanceRow.instance_id, InstanceRow.updated_at).where(InstanceRow.instance_id.in_(ids)))
            if updated is not None and updated > taken}  # UTCDateTime reads aware UTC times back
        if newer:
            logger.info("inventory from agent %s taken at %s: %d instance(s) changed since, kept as they are: %s",
                        agent.agent_id, taken.isoformat(), len(newer), sorted(newer))
    for inst in req.instances:
        if inst.instance_id in newer:
            continue
        role = inst.role
        upsert(
            session,
            InstanceRow,
            {
                "instance_id": inst.instance_id,
                "region": agent.region,
                "az": inst.az,
                "instance_type": inst.instance_type,
                "pool": inst.pool,
                "market": inst.market.value,
                "state": inst.state,
                "tags": inst.tags,
                "managed": inst.managed,
                "workload": inst.tags.get(WORKLOAD_TAG),
                "role": role.value if role else None,
                "launch_time": inst.launch_time,
                "private_ip": inst.private_ip,
                "public_ip": inst.public_ip,
                "reported_by": agent.agent_id,
                "updated_at": taken or now,  # what the row says is as of the listing, not of its arrival
            },
            keys=("instance_id",),
        )
    emit(
        session,
        EventKind.INVENTORY_REPORTED,
        f"inventory of {len(req.instances)} instance(s) reported by agent {agent.agent_id}",
        now=now,
        workload=agent.workload,
        agent_id=agent.agent_id,
        data={"count": len(req.instances)},
    )
    session.commit()
    return Ack(accepted=len(req.instances))


def list_instances(session: Session, *, workload: str | None = None) -> list[InstanceRow]:
    query = select(InstanceRow).order_by(InstanceRow.instance_id)
    if workload:
        query = query.where(InstanceRow.workload == workload)
    return list(session.scalars(query))


def list_notices(
    session: Session, *, workload: str | None = None, agent_id: str | None = None
) -> list[NoticeRow]:
    query = select(NoticeRow).order_by(NoticeRow.received_at)
    if workload:
        query = query.where(NoticeRow.workload == workload)
    if agent_id:
        query = query.where(NoticeRow.agent_id == agent_id)
    return list(session.scalars(query))


def latest_spot_prices(session: Session, *, instance_type: str | None = None) -> list[SpotPriceRow]:
    """The newest price of every (region, type, az)."""
    newest = (
        select(
            SpotPriceRow.region,
            SpotPriceRow.instance_type,
            SpotPriceRow.az,
            func.max(SpotPriceRow.ts).label("ts"),
        )
        .group_by(SpotPriceRow.region, SpotPriceRow.instance_type, SpotPriceRow.az)
        .subquery()
    )
    query = select(SpotPriceRow).join(
        newest,
        (SpotPriceRow.region == newest.c.region)
        & (SpotPriceRow.instance_type == newest.c.instance_type)
        & (SpotPriceRow.az == newest.c.az)
        & (SpotPriceRow.ts == newest.c.ts),
    )
    if instance_type:
        query = query.where(SpotPriceRow.instance_type == instance_type)
    return list(session.scalars(query.order_by(SpotPriceRow.instance_type, SpotPriceRow.az)))


def ondemand_prices(session: Session, *, instance_type: str | None = None) -> list[OnDemandPriceRow]:
    query = select(OnDemandPriceRow).order_by(OnDemandPriceRow.region, OnDemandPriceRow.instance_type)
    if instance_type:
        query = query.where(OnDemandPriceRow.instance_type == instance_type)
    return list(session.scalars(query))
