"""The decision loop: every `decision_interval_s` and at once when a notice arrives, the leader runs the
engine for each workload, carries out the actions and stores the decision with its rationale.

`run_decisions_once(app)` is one pass and is what tests call; `start(app)` runs passes in the background.
A decision is stored when it issued or changed something, or when its actions differ from the last
stored one of the workload, so a steady state does not write a row every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from spot_optimizer.core.decision import Action, Decision
from spot_optimizer.core.engine import decide
from spot_optimizer.core.models import Market
from spot_optimizer.core.protocol import AgentPolicy
from spot_optimizer.server.decisions import advisor, freshness, lease
from spot_optimizer.server.decisions.actuate import Actuator
from spot_optimizer.server.decisions.market import market_view, risk_view, waking_event
from spot_optimizer.server.decisions.state import WorkloadState, load_workload
from spot_optimizer.server.models import DecisionRow, WorkloadRow
from spot_optimizer.server.services import agents as agent_service
from spot_optimizer.server.services import commands as command_service
from spot_optimizer.server.services.decisions import record_decision
from spot_optimizer.server.settings import ServerSettings

logger = logging.getLogger(__name__)


@dataclass
class LoopRun:
    leader: bool
    decisions: list[DecisionRow] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # ids of the commands issued
    policies: dict[str, AgentPolicy] = field(default_factory=dict)  # workload -> where it may run


def _holder(app: FastAPI) -> str:
    if not hasattr(app.state, "decision_holder"):
        app.state.decision_holder = uuid.uuid4().hex
        app.state.decision_last_run = {}
    return str(app.state.decision_holder)


def run_decisions_once(app: FastAPI, only: set[str] | None = None) -> LoopRun:
    """One pass over every workload (or just those in `only`), if this process holds the leader lease."""
    settings: ServerSettings = app.state.settings
    holder = _holder(app)
    now = settings.clock()
    with app.state.session_factory() as session:
        ttl = max(settings.leader_lease_s, 3 * settings.decision_interval_s)
        if not lease.acquire(session, lease.DECISION_LOOP, holder, now, ttl):
            logger.debug("decision loop: another server process holds the leader lease")
            return LoopRun(leader=False)
        agent_service.mark_offline(session, settings, now)
        command_service.reassign_orphans(session, now)
        command_service.expire_due(session, now)
        run = LoopRun(leader=True)
        last_runs: dict[str, datetime] = app.state.decision_last_run
        query = select(WorkloadRow).order_by(WorkloadRow.name)
        if only:
            query = query.where(WorkloadRow.name.in_(sorted(only)))
        for workload in session.scalars(query).all():
            since = last_runs.get(workload.name, now - timedelta(seconds=max(settings.decision_interval_s, 60.0)))
            try:
                _run_workload(session, settings, workload, since, now, run)
            except Exception:  # one broken workload must not stop the others
                session.rollback()
                logger.exception("decision loop failed for workload %s; the next pass retries", workload.name)
            last_runs[workload.name] = now
        # Heartbeats hand this to the agents: their last known policy if the server goes away.
        app.state.decision_policies = {**getattr(app.state, "decision_policies", {}), **run.policies}
        return run


def _run_workload(
    session: Session, settings: ServerSettings, workload: WorkloadRow, since: datetime, now: datetime, run: LoopRun
) -> None:
    state = load_workload(session, workload, now)
    if state is None or not state.view.region:
        return
    actuator = Actuator(session, settings, state, now)
    try:
        if not state.view.instance_types or not state.view.azs:
            freshness.refresh(actuator, settings.prices_refresh_s, settings.inventory_refresh_s)
            return  # nothing is known yet about where it may run: wait for the inventory and prices
        run.policies[workload.name] = AgentPolicy(
            instance_types=list(state.view.instance_types), availability_zones=list(state.view.azs),
            allow_on_demand=Market.ON_DEMAND in state.view.settings.allowed_markets)
        event = waking_event(session, workload.name, since, now)
        decision = decide(state.view, market_view(session, state.view),
                          risk_view(session, state.view, settings.advisor_path, now), now, event)
        entries = [_entry(a, actuator.apply(a)) for a in decision.actions]
        entries += [r for r in actuator.retag_demoted(decision) if r["outcome"] == "issued"]
        acted = bool(actuator.issued) or bool(actuator.demoted)
        stored = _store(session, state, decision, event.kind.value, entries, acted)
        if stored is not None:
            run.decisions.append(stored)
        # Collections after the decision's own commands: an agent runs its commands in the order issued, and
        # a launch on an interruption notice must not wait behind a price or inventory sweep.
        freshness.refresh(actuator, settings.prices_refresh_s, settings.inventory_refresh_s)
    finally:
        run.commands += [c.command_id for c in actuator.issued]


def _entry(action: Action, outcome: dict[str, Any]) -> dict[str, Any]:
    return {**action.model_dump(mode="json"), **outcome}


def _signature(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e.get("kind"), e.get("trigger"), (e.get("pool") or {}).get("instance_type"),
             (e.get("pool") or {}).get("az"), (e.get("pool") or {}).get("market"), e.get("instance_id"),
             e.get("old_instance_id"), (e.get("rationale") or {}).get("text"), e.get("outcome"))
            for e in entries]


def _store(session: Session, state: WorkloadState, decision: Decision, woke_by: str,
           entries: list[dict[str, Any]], acted: bool) -> DecisionRow | None:
    last = session.scalar(
        select(DecisionRow).where(DecisionRow.workload == state.name)
        .order_by(DecisionRow.ts.desc(), DecisionRow.decision_id.desc()).limit(1)
    )
    if not acted:
        # Only waiting for commands already in flight, or the same verdict as last time: nothing new.
        waiting = all(e.get("outcome") in ("already_open", "nothing") for e in entries) and any(
            e.get("outcome") == "already_open" for e in entries)
        if waiting or (last is not None and _signature(last.actions) == _signature(entries)):
            return None
    rationale = [{"kind": e.get("kind"), "text": (e.get("rationale") or {}).get("text", e.get("kind")),
                  "numbers": (e.get("rationale") or {}).get("numbers", {}), "woke_by": woke_by} for e in entries]
    return record_decision(session, workload=state.name, actions=entries, rationale=rationale, now=decision.at)


# --- running in the background ---------------------------------------------------------------------------
class PassTracker:
    """Counts wake-ups and finished passes, so a caller can wait for the pass that covers its wake-up."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.requested = 0  # wake-ups so far
        self.covered = 0  # wake-ups whose pass has finished

    def request(self) -> int:
        with self._cond:
            self.requested += 1
            return self.requested

    def starting(self) -> int:
        """A pass starts: it covers every wake-up made until now."""
        with self._cond:
            return self.requested

    def finished(self, covers: int) -> None:
        with self._cond:
            self.covered = max(self.covered, covers)
            self._cond.notify_all()

    def wait(self, ticket: int, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.covered >= ticket, timeout=timeout_s)


def wake(app: FastAPI, workload: str | None = None) -> int | None:
    """Make the background loop run now (safe from any thread; a no-op when it does not run). With a
    workload, the next pass decides for it alone: a notice should not wait behind every other workload.
    Returns a ticket for `wait_for_pass`, or None when no loop runs."""
    waker = getattr(app.state, "decision_waker", None)
    if waker is None:
        return None
    if workload is not None:
        app.state.decision_urgent.add(workload)
    ticket = int(app.state.decision_passes.request())
    waker()
    return ticket


def wait_for_pass(app: FastAPI, ticket: int | None, timeout_s: float) -> bool:
    """Block (a worker thread, never the event loop) until the pass covering `ticket` has finished."""
    tracker: PassTracker | None = getattr(app.state, "decision_passes", None)
    if ticket is None or tracker is None:
        return False
    return tracker.wait(ticket, timeout_s)


async def _loop(app: FastAPI, interval: float, event: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    tracker: PassTracker = app.state.decision_passes
    last_full = loop.time()
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=max(0.0, last_full + interval - loop.time()))
        event.clear()
        covers = tracker.starting()
        urgent: set[str] = set(app.state.decision_urgent)
        app.state.decision_urgent.difference_update(urgent)
        full = not urgent or loop.time() - last_full >= interval
        try:
            await run_in_threadpool(run_decisions_once, app, None if full else urgent)
        except Exception:
            logger.exception("decision loop pass failed; retrying in %.1f s", interval)
        finally:
            tracker.finished(covers)
        if full:
            last_full = loop.time()


def start(app: FastAPI) -> asyncio.Task[None] | None:
    """Start the background loop (from the app's lifespan); None when `decision_interval_s` is 0."""
    settings: ServerSettings = app.state.settings
    if settings.advisor_path:
        advisor.check(settings.advisor_path)
    if settings.decision_interval_s <= 0:
        return None
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    app.state.decision_urgent = set()
    app.state.decision_passes = PassTracker()
    app.state.decision_waker = lambda: loop.call_soon_threadsafe(event.set)
    return asyncio.create_task(_loop(app, settings.decision_interval_s, event))


async def stop(app: FastAPI, task: asyncio.Task[None] | None) -> None:
    app.state.decision_waker = None
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    settings: ServerSettings = app.state.settings
    try:
        with app.state.session_factory() as session:
            lease.release(session, lease.DECISION_LOOP, _holder(app), settings.clock())
    except Exception:  # shutting down: the lease simply expires
        logger.warning("could not release the decision loop's leader lease", exc_info=True)
