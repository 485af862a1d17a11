"""Carry out a decision: each action becomes a command through the operator's own command service (so
it is stored, evented, leased and redelivered like a manual one), addressed to a live agent of the
workload, and never twice while an equivalent command is still open.

DEMOTE is a retag that `core.decision.command_for` leaves to the server: the loop records it on the
instance row at once (the engine sees the zombie from the next run on) and, as soon as the workload has
another primary, writes the tag in EC2 with a promote command of that primary whose `old_instance_id`
is the demoted instance (the agent has no separate retag command).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from spot_optimizer.core.commands import CommandType
from spot_optimizer.core.decision import Action, ActionKind, Decision, command_for
from spot_optimizer.core.models import ROLE_TAG, Role
from spot_optimizer.server.decisions.state import ACTIVE_STATES, RETAG_REASON, WorkloadState
from spot_optimizer.server.errors import ApiError
from spot_optimizer.server.models import AgentRow, CommandRow, InstanceRow
from spot_optimizer.server.services.commands import OPEN_STATUSES, issue_command
from spot_optimizer.server.settings import ServerSettings

logger = logging.getLogger(__name__)

Key = tuple[str, ...]


def command_key(command_type: str, params: dict[str, Any]) -> Key:
    """Commands with the same key do the same job: a second one while the first is open is a duplicate.
    Any open launch of a role covers the next launch of that role (its pool may have changed since)."""
    if command_type == CommandType.LAUNCH.value:
        return (command_type, str(params.get("role") or Role.REPLICA.value))
    if command_type == CommandType.PROMOTE.value:
        return (command_type, str(params.get("instance_id")), str(params.get("old_instance_id") or ""))
    if command_type == CommandType.TERMINATE.value:
        return (command_type, str(params.get("instance_id")))
    return (command_type,)


def open_commands(session: Session, workload: str) -> dict[Key, CommandRow]:
    rows = session.scalars(
        select(CommandRow).where(CommandRow.workload == workload, CommandRow.status.in_(OPEN_STATUSES))
    )
    return {command_key(r.type, r.params): r for r in rows}


class Actuator:
    def __init__(self, session: Session, settings: ServerSettings, state: WorkloadState, now: datetime) -> None:
        self.session = session
        self.settings = settings
        self.state = state
        self.now = now
        self.open = open_commands(session, state.name)
        self.agent = state.command_agent()
        self.issued: list[CommandRow] = []
        self.demoted: list[str] = []

    def issue(self, command_type: CommandType, params: dict[str, Any], reason: str,
              agent: AgentRow | None = None) -> dict[str, Any]:
        """Issue one command to `agent` (default: the workload's command agent) unless an equivalent is open."""
        key = command_key(command_type.value, params)
        existing = self.open.get(key)
        if existing is not None:
            return {"outcome": "already_open", "command_id": existing.command_id}
        agent = agent or self.agent
        if agent is None:
            return {"outcome": "no_online_agent"}
        try:
            row = issue_command(
                self.session, agent_id=agent.agent_id, command_type=command_type, params=params,
                settings=self.settings, now=self.now, reason=reason, source="engine",
            )
        except ApiError as exc:
            self.session.rollback()
            logger.warning("decision loop: %s for workload %s refused: %s", command_type.value, self.state.name,
                           exc.message)
            return {"outcome": "refused", "error": exc.message}
        self.open[key] = row
        self.issued.append(row)
        return {"outcome": "issued", "command_id": row.command_id, "agent_id": row.agent_id}

    def demote(self, instance_id: str) -> dict[str, Any]:
        row = self.session.get(InstanceRow, instance_id)
        if row is None:
            return {"outcome": "not_in_inventory"}
        if row.demoted_at is None:
            row.demoted_at = self.now
            row.role = Role.ZOMBIE.value
            row.updated_at = self.now
            self.session.commit()
            self.demoted.append(instance_id)
        return {"outcome": "demoted"}

    def apply(self, action: Action) -> dict[str, Any]:
        if action.kind is ActionKind.NOTHING:
            return {"outcome": "nothing"}
        if action.kind is ActionKind.DEMOTE and action.instance_id:
            return self.demote(action.instance_id)
        command = command_for(action, self.state.name)
        if command is None:
            return {"outcome": "no_command"}
        return self.issue(command[0], command[1], action.rationale.text)

    def retag_demoted(self, decision: Decision) -> list[dict[str, Any]]:
        """Tag demoted instances `zombie` in EC2 through a promote of the current, healthy primary.

        Not while any promotion is planned or open: its own old-primary tag must be the last word."""
        primary = self.state.primary()
        if (primary is None or primary.interruption_notice or primary.instance_id in self.demoted
                or primary.instance_id not in self.state.rows
                or any(a.kind is ActionKind.PROMOTE for a in decision.actions)
                or any(k[0] == CommandType.PROMOTE.value and not (r.reason or "").startswith(RETAG_REASON)
                       for k, r in self.open.items())):
            return []
        done = []
        for row in self.session.scalars(select(InstanceRow).where(
            InstanceRow.workload == self.state.name, InstanceRow.demoted_at.is_not(None),
            InstanceRow.state.in_(ACTIVE_STATES),
        )):
            if (row.tags or {}).get(ROLE_TAG) == Role.ZOMBIE.value or row.instance_id == primary.instance_id:
                continue
            params = {"instance_id": primary.instance_id, "old_instance_id": row.instance_id}
            outcome = self.issue(CommandType.PROMOTE, params,
                                 f"{RETAG_REASON} tag {row.instance_id} zombie (demoted by the decision loop)")
            done.append({"kind": "retag", "instance_id": row.instance_id, **outcome})
        return done
