"""The workload page's data: where the primary ran over time, the event timeline with decisions' rationale,
and what the manual command buttons may target."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from spot_optimizer.core.commands import CommandStatus, CommandType
from spot_optimizer.core.models import AgentState
from spot_optimizer.server.models import AgentRow, CommandRow, DecisionRow, EventRow
from spot_optimizer.server.services import decisions as decision_service
from spot_optimizer.server.services.events import EventKind
from spot_optimizer.server.web.chart import Chart, Stint, build_chart, chart_keys
from spot_optimizer.server.web.fleet import Member, PriceKey, WorkloadView, load_prices

TIMELINE_LIMIT = 150


@dataclass
class TimelineItem:
    ts: datetime
    kind: str
    message: str
    agent_id: str | None = None
    command_id: str | None = None
    rationale: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)


def _text(item: Any) -> str:
    if isinstance(item, dict):
        return ", ".join(f"{k}: {v}" for k, v in item.items())
    return str(item)


def primary_stints(session: Session, view: WorkloadView, now: datetime) -> list[Stint]:
    """Who was primary when: registrations and role changes to primary, and successful promotions."""
    changes: list[tuple[datetime, str]] = []
    events = session.scalars(
        select(EventRow)
        .where(
            EventRow.workload == view.name,
            EventRow.kind.in_([EventKind.AGENT_REGISTERED.value, EventKind.ROLE_CHANGED.value]),
        )
        .order_by(EventRow.id)
    )
    for event in events:
        data = event.data or {}
        if event.kind == EventKind.AGENT_REGISTERED.value and data.get("role") == "primary":
            changes.append((event.ts, str(data.get("instance_id"))))
        elif event.kind == EventKind.ROLE_CHANGED.value and data.get("to") == "primary":
            changes.append((event.ts, str(data.get("instance_id"))))
    promotions = session.scalars(
        select(CommandRow).where(
            CommandRow.workload == view.name,
            CommandRow.type == CommandType.PROMOTE.value,
            CommandRow.status == CommandStatus.SUCCEEDED.value,
        )
    )
    for cmd in promotions:
        if cmd.finished_at is not None:
            changes.append((cmd.finished_at, str(cmd.params.get("instance_id"))))
    primary = view.primary
    if not changes and primary is not None:
        changes.append((primary.start, primary.instance_id))
    changes.sort(key=lambda c: c[0])
    members = {m.instance_id: m for m in view.members}
    stints: list[Stint] = []
    for ts, instance_id in changes:
        if stints and stints[-1].instance_id == instance_id:
            continue
        if stints:
            stints[-1].end = ts
        member = members.get(instance_id)
        key = member.price_key if member and member.market == "spot" else None
        label = f"{member.instance_type} {member.az} {member.market}" if member else instance_id
        stints.append(Stint(start=ts, end=now, instance_id=instance_id, key=key, label=label))
    first = members.get(stints[0].instance_id) if stints else None
    if first is not None and first.start < stints[0].start:
        stints[0].start = first.start  # the first primary known ran there since its launch
    return stints


def workload_chart(session: Session, view: WorkloadView, now: datetime) -> tuple[Chart, list[PriceKey]]:
    member_keys = {m.price_key for m in view.members}
    book = load_prices(session, {k[1] for k in member_keys} | _allowed_types(view.row.allowed_pools))
    keys = chart_keys(view.row.allowed_pools or [], member_keys, book)
    return build_chart(book, keys, primary_stints(session, view, now), now), keys


def _allowed_types(allowed: list[Any] | None) -> set[str]:
    types: set[str] = set()
    for entry in allowed or []:
        if isinstance(entry, str) and entry.count("/") == 3:
            types.add(entry.split("/")[1])
        elif isinstance(entry, dict) and entry.get("instance_type"):
            types.add(str(entry["instance_type"]))
    return types


def timeline(session: Session, workload: str) -> list[TimelineItem]:
    """Newest first: the workload's events, each decision with its actions and rationale."""
    events = list(
        session.scalars(
            select(EventRow)
            .where(EventRow.workload == workload)
            .order_by(EventRow.id.desc())
            .limit(TIMELINE_LIMIT)
        )
    )
    decisions: dict[str, DecisionRow] = {
        d.decision_id: d for d in decision_service.list_decisions(session, workload=workload, limit=TIMELINE_LIMIT)
    }
    items: list[TimelineItem] = []
    for event in events:
        item = TimelineItem(event.ts, event.kind, event.message, event.agent_id, event.command_id)
        if event.kind == EventKind.DECISION.value:
            decision = decisions.pop(str((event.data or {}).get("decision_id")), None)
            if decision is not None:
                item.rationale = [_text(r) for r in decision.rationale]
                item.actions = [_text(a) for a in decision.actions]
        if event.kind == EventKind.COMMAND_ISSUED.value and (event.data or {}).get("reason"):
            item.rationale = [str(event.data["reason"])]
        items.append(item)
    oldest = events[-1].ts if len(events) == TIMELINE_LIMIT else None
    for decision in decisions.values():  # decisions stored without an event
        if oldest is None or decision.ts >= oldest:
            items.append(
                TimelineItem(
                    decision.ts,
                    EventKind.DECISION.value,
                    f"decision {decision.decision_id}: {len(decision.actions)} action(s)",
                    rationale=[_text(r) for r in decision.rationale],
                    actions=[_text(a) for a in decision.actions],
                )
            )
    items.sort(key=lambda i: i.ts, reverse=True)
    return items


@dataclass
class Targets:
    """Which agent carries out each manual command, and on what."""

    commander: AgentRow | None  # the primary's agent, else any live agent of the workload
    replicas: list[tuple[Member, AgentRow | None]]
    zombies: list[Member]
    launch_types: list[str]
    launch_azs: list[str]


def _live(agent: AgentRow | None) -> bool:
    return agent is not None and agent.state not in (AgentState.OFFLINE.value, AgentState.TERMINATED.value)


def command_targets(view: WorkloadView, chart_pools: list[PriceKey]) -> Targets:
    primary = view.primary
    commander = primary.agent if primary and _live(primary.agent) else None
    if commander is None:
        commander = next((a for a in view.agents if _live(a)), None)
    replicas = []
    for member in view.with_role("replica"):
        # The primary's agent promotes (it demotes itself); without it, the replica's own agent does.
        replicas.append((member, commander or member.agent))
    types = sorted({k[1] for k in chart_pools} | {m.instance_type for m in view.members})
    azs = sorted({k[2] for k in chart_pools} | {m.az for m in view.members})
    return Targets(commander, replicas, view.with_role("zombie"), types, azs)
