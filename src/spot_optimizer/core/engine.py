"""The decision engine: one pure function, `decide`, from what we know now to what to do now.

The server runs it live and the backtester replays price history through it, so it reads no clock,
does no I/O and keeps no state: everything it needs is in its arguments, and the caller applies the
returned actions. It is level-triggered: it looks at the whole workload each time (which instance has a
notice, which replica is ready), so calling it twice, or late, gives the right answer; the event only
adds facts the caller may not have stored yet.

Rules, in order of urgency (each sees the effect of the ones before it):
1. interruption notice -> promote a ready replica, else launch a replacement now (fallback list ends
   on on-demand); the dying primary becomes a zombie.
2. no primary -> promote a ready replica or launch one.
3. rebalance recommendation -> start a replica elsewhere; once it is ready, move to it.
4. on-demand fallback -> go back to spot as soon as an acceptable pool is there.
5. auto switching -> move when the saving over the horizon beats the cost of moving.
6. replicas nobody needs are demoted; `manual_replica` keeps one standby in another pool/AZ.
7. zombies are terminated with `auto_terminate`, and only while a ready primary keeps serving; not in the
   decision that demotes them, and not while an interruption notice lets them drain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from spot_optimizer.core.decision import (
    Action,
    ActionKind,
    Decision,
    Event,
    EventKind,
    InstanceView,
    MarketView,
    Rationale,
    Trigger,
    WorkloadView,
)
from spot_optimizer.core.models import Market, Pool, Role
from spot_optimizer.core.risk import RiskView


@dataclass(frozen=True)
class Option:
    """A pool scored for this workload: `hourly_cost` is price plus the expected cost of interruptions."""

    pool: Pool
    price: float
    hourly_cost: float
    monthly_risk: float
    acceptable: bool
    why_not: str = ""

    def numbers(self, prefix: str) -> dict[str, object]:
        return {
            f"{prefix}_pool": self.pool.pool_id,
            f"{prefix}_price_usd_h": _finite(self.price),
            f"{prefix}_hourly_cost_usd": _finite(self.hourly_cost),
            f"{prefix}_monthly_interruption_p": round(self.monthly_risk, 4),
        }


@dataclass
class _Plan:
    """The workload as it will be once the actions decided so far are carried out."""

    workload: WorkloadView
    market: MarketView
    risk: RiskView
    now: datetime
    instances: list[InstanceView]
    blocked_pools: set[str] = field(default_factory=set)
    actions: list[Action] = field(default_factory=list)
    counter: int = 0
    _options: dict[str, Option] = field(default_factory=dict)

    # --- reading the state -------------------------------------------------------------------------
    def live(self, role: Role) -> list[InstanceView]:
        return [i for i in self.instances if i.role is role]

    def primary(self) -> InstanceView | None:
        primaries = self.live(Role.PRIMARY)
        return primaries[0] if primaries else None

    def healthy_replicas(self, ready: bool | None = None) -> list[InstanceView]:
        return [
            i
            for i in self.live(Role.REPLICA)
            if not i.interruption_notice and (ready is None or i.ready is ready)
        ]

    def option(self, pool: Pool, pool_id: str | None = None) -> Option:
        pool_id = pool_id or pool.pool_id
        cached = self._options.get(pool_id)
        if cached is None:
            cached = self._options[pool_id] = self._score(pool, pool_id)
        return cached

    def _score(self, pool: Pool, pool_id: str) -> Option:
        settings = self.workload.settings
        spot = pool.market is Market.SPOT
        price = self.market.spot.get(pool_id) if spot else self.market.ondemand.get(pool.instance_type)
        ondemand = self.market.ondemand.get(pool.instance_type)
        risk = self.risk.of(pool, pool_id)
        if price is None:
            return Option(pool, float("inf"), float("inf"), risk.monthly_probability, False, "no price")
        # An interruption costs `interruption_cost_hours` of the on-demand price (or of the spot
        # price when on-demand is unknown); its expected cost per hour is hazard x that.
        base = ondemand if ondemand is not None else price
        expected = settings.risk_weight * risk.hazard_per_hour * settings.interruption_cost_hours * base
        why_not = ""
        if not self.workload.allows(pool):
            why_not = "not allowed"
        elif pool_id in self.blocked_pools or not risk.capacity_ok:
            why_not = "no capacity"
        elif spot:
            if ondemand is not None and price > settings.max_spot_price_fraction * ondemand:
                why_not = "spot price above cap"
            elif risk.monthly_probability > settings.max_interruption_probability:
                why_not = "interruption risk above limit"
        return Option(pool, price, price + expected, risk.monthly_probability, not why_not, why_not)

    def candidates(self, market: Market, exclude: set[str], prefer_other_az: str | None = None) -> list[Option]:
        """Acceptable pools of one market, best first (another AZ first when asked)."""
        if market not in self.workload.settings.allowed_markets:
            return []
        opts = []
        pools = _pools(self.workload.region, tuple(self.workload.instance_types), tuple(self.workload.azs), market)
        for pool, pool_id in pools:
            if pool_id in exclude:
                continue
            opt = self.option(pool, pool_id)
            if opt.acceptable:
                opts.append(opt)
        opts.sort(key=lambda o: (prefer_other_az is not None and o.pool.az == prefer_other_az,
                                 o.hourly_cost, o.pool.pool_id))
        return opts

    def launch_order(self, exclude: set[str], prefer_other_az: str | None = None) -> list[Option]:
        """Where to launch, in order: spot pools, then on-demand as the last resort."""
        return self.candidates(Market.SPOT, exclude, prefer_other_az) + self.candidates(
            Market.ON_DEMAND, exclude, prefer_other_az
        )

    def emergency_order(self, exclude: set[str]) -> list[Option]:
        """Where to put a primary that is dying or missing. Normally the launch order; but when no pool
        has a price yet (a fresh start, a Pricing or spot-price outage), the allowed pools that lack only
        a price, spot first and on-demand last: running unpriced beats not running at all."""
        order = self.launch_order(exclude)
        if order:
            return order
        unpriced: list[Option] = []
        for market in (Market.SPOT, Market.ON_DEMAND):
            if market not in self.workload.settings.allowed_markets:
                continue
            pools = _pools(self.workload.region, tuple(self.workload.instance_types), tuple(self.workload.azs), market)
            unpriced += [opt for pool, pool_id in pools if pool_id not in exclude
                         and (opt := self.option(pool, pool_id)).why_not == "no price"]
        return unpriced

    def in_cooldown(self) -> bool:
        last = self.workload.last_move_at
        return last is not None and (self.now - last).total_seconds() < self.workload.settings.cooldown_s

    # --- changing the plan -------------------------------------------------------------------------
    def _set_role(self, instance_id: str, role: Role) -> None:
        self.instances = [replace_role(i, role) if i.instance_id == instance_id else i for i in self.instances]

    def promote(self, replica: InstanceView, old: InstanceView | None, trigger: Trigger, text: str,
                numbers: dict[str, object]) -> None:
        self._set_role(replica.instance_id, Role.PRIMARY)
        if old is not None:
            self._set_role(old.instance_id, Role.ZOMBIE)
        self.actions.append(Action(
            kind=ActionKind.PROMOTE, trigger=trigger, instance_id=replica.instance_id,
            old_instance_id=old.instance_id if old else None, rationale=Rationale(text=text, numbers=numbers),
        ))

    def demote(self, inst: InstanceView, trigger: Trigger, text: str, numbers: dict[str, object]) -> None:
        self._set_role(inst.instance_id, Role.ZOMBIE)
        self.actions.append(Action(kind=ActionKind.DEMOTE, trigger=trigger, instance_id=inst.instance_id,
                                   rationale=Rationale(text=text, numbers=numbers)))

    def launch(self, order: list[Option], role: Role, trigger: Trigger, text: str,
               numbers: dict[str, object], kind: ActionKind = ActionKind.LAUNCH) -> bool:
        if not order:
            self.actions.append(Action(kind=ActionKind.NOTHING, trigger=trigger, rationale=Rationale(
                text=f"{text}, but no allowed pool is acceptable and has capacity", numbers=numbers)))
            return False
        best = order[0]
        if best.pool.market is Market.ON_DEMAND and kind is ActionKind.LAUNCH:
            kind = ActionKind.FALLBACK_TO_ON_DEMAND
        ondemand = self.market.ondemand.get(best.pool.instance_type)
        max_price = None
        if best.pool.market is Market.SPOT and ondemand is not None:
            max_price = round(self.workload.settings.max_spot_price_fraction * ondemand, 6)
        self.actions.append(Action(
            kind=kind, trigger=trigger, pool=best.pool, role=role, max_price=max_price,
            fallback_pools=[o.pool for o in order[1:6]],
            rationale=Rationale(text=text, numbers={**numbers, **best.numbers("target"),
                                                    "alternatives": len(order) - 1}),
        ))
        self.counter += 1
        self.instances.append(InstanceView(instance_id=f"planned-{self.counter}", pool=best.pool, role=role,
                                           ready=False))
        return True


@lru_cache(maxsize=256)
def _pools(region: str, types: tuple[str, ...], azs: tuple[str, ...], market: Market) -> tuple[tuple[Pool, str], ...]:
    """Every pool of the workload's types x AZs in one market, with its id (cached: pure and reused)."""
    pools = [Pool(region=region, instance_type=t, az=az, market=market) for t in types for az in azs]
    return tuple((p, p.pool_id) for p in pools)


def _finite(value: float) -> float | None:
    """Rationale numbers are JSON: an unknown price is null, not Infinity."""
    return round(value, 6) if math.isfinite(value) else None


def replace_role(inst: InstanceView, role: Role) -> InstanceView:
    return inst.model_copy(update={"role": role})


def _apply_event(plan: _Plan, event: Event | None) -> None:
    """Fold the event's facts into the plan (the caller may not have stored them yet)."""
    if event is None:
        return
    if event.kind is EventKind.CAPACITY_ERROR and event.pool_id:
        plan.blocked_pools.add(event.pool_id)
    if event.instance_id and event.kind in (EventKind.INTERRUPTION, EventKind.REBALANCE):
        flag = "interruption_notice" if event.kind is EventKind.INTERRUPTION else "rebalance_notice"
        plan.instances = [
            i.model_copy(update={flag: True}) if i.instance_id == event.instance_id else i
            for i in plan.instances
        ]


def _handle_interruptions(plan: _Plan) -> None:
    for inst in list(plan.instances):
        if not inst.interruption_notice or inst.role is Role.ZOMBIE:
            continue
        numbers: dict[str, object] = {"interrupted_instance": inst.instance_id,
                                      "interrupted_pool": inst.pool.pool_id}
        if inst.role is Role.REPLICA:
            plan.demote(inst, Trigger.INTERRUPTION, "replica got an interruption notice", numbers)
            continue
        ready = sorted((plan.option(r.pool).hourly_cost, r.instance_id, r)
                       for r in plan.healthy_replicas(ready=True))
        if ready:
            replica = ready[0][2]
            plan.promote(replica, inst, Trigger.INTERRUPTION,
                         "interruption notice: promote the ready replica, no downtime",
                         {**numbers, **plan.option(replica.pool).numbers("replica")})
            continue
        pending = plan.healthy_replicas(ready=False)
        successor = [i for i in plan.instances if i.role is Role.PRIMARY and i.instance_id != inst.instance_id
                     and not i.interruption_notice]
        plan.demote(inst, Trigger.INTERRUPTION, "interruption notice: the primary dies within two minutes",
                    numbers)
        if pending:
            continue  # a replica is booting: it is promoted as soon as it is ready (rule 2)
        if successor:
            continue  # its replacement was already launched (an earlier pass): never launch a second one
        dying = {i.pool.pool_id for i in plan.instances if i.interruption_notice}
        plan.launch(plan.emergency_order(dying | plan.blocked_pools), Role.PRIMARY, Trigger.INTERRUPTION,
                    "interruption notice and no replica: launch a replacement at once", numbers)


def _ensure_primary(plan: _Plan) -> None:
    if plan.primary() is not None:
        return
    ready = sorted((plan.option(r.pool).hourly_cost, r.instance_id, r)
                   for r in plan.healthy_replicas(ready=True))
    if ready:
        replica = ready[0][2]
        plan.promote(replica, None, Trigger.MISSING_PRIMARY, "no primary: promote the ready replica",
                     plan.option(replica.pool).numbers("replica"))
    elif not plan.healthy_replicas(ready=False):
        dying = {i.pool.pool_id for i in plan.instances if i.interruption_notice}
        plan.launch(plan.emergency_order(dying | plan.blocked_pools), Role.PRIMARY, Trigger.MISSING_PRIMARY,
                    "no primary and no replica: launch a primary", {})


def _handle_rebalance(plan: _Plan) -> None:
    primary = plan.primary()
    if primary is None or not primary.rebalance_notice or primary.interruption_notice or not primary.ready:
        return
    numbers: dict[str, object] = {"primary_pool": primary.pool.pool_id}
    ready = [r for r in plan.healthy_replicas(ready=True) if r.pool != primary.pool
             and plan.option(r.pool).acceptable]
    if ready:
        best = min(ready, key=lambda r: plan.option(r.pool).hourly_cost)
        plan.promote(best, primary, Trigger.REBALANCE,
                     "rebalance recommendation: move to the ready replica before the notice comes",
                     {**numbers, **plan.option(best.pool).numbers("replica")})
    elif not plan.healthy_replicas():
        plan.launch(plan.launch_order({primary.pool.pool_id} | plan.blocked_pools, primary.pool.az),
                    Role.REPLICA, Trigger.REBALANCE,
                    "rebalance recommendation: start a replica in another pool before the notice", numbers)


def _return_to_spot(plan: _Plan) -> None:
    primary = plan.primary()
    if primary is None or primary.pool.market is not Market.ON_DEMAND or not primary.ready:
        return
    spot = plan.candidates(Market.SPOT, plan.blocked_pools)
    if not spot:
        return
    numbers: dict[str, object] = {"ondemand_pool": primary.pool.pool_id,
                                  "ondemand_price_usd_h": plan.market.price(primary.pool)}
    ready = [r for r in plan.healthy_replicas(ready=True)
             if r.pool.market is Market.SPOT and plan.option(r.pool).acceptable]
    if ready:
        best = min(ready, key=lambda r: plan.option(r.pool).hourly_cost)
        plan.promote(best, primary, Trigger.RETURN_TO_SPOT, "spot replica ready: leave the on-demand fallback",
                     {**numbers, **plan.option(best.pool).numbers("replica")})
    elif not any(r.pool.market is Market.SPOT for r in plan.healthy_replicas()):
        plan.launch(spot, Role.REPLICA, Trigger.RETURN_TO_SPOT,
                    "on on-demand fallback and an acceptable spot pool has capacity: return to spot",
                    numbers, kind=ActionKind.RETURN_TO_SPOT)


def worth_moving(plan: _Plan, current: Option, target: Option, sunk: bool) -> tuple[bool, dict[str, object]]:
    """Move when the saving over the horizon beats the cost of moving, by the hysteresis margin.

    The cost of moving is paying both instances while the new one boots (already spent once the
    replica runs: `sunk`). The target's risk is inside its hourly cost. A current pool that is no
    longer acceptable (price above cap, risk above limit, not allowed) is left for any acceptable one.
    """
    settings = plan.workload.settings
    saving_h = current.hourly_cost - target.hourly_cost
    move_cost = 0.0 if sunk else settings.boot_time_h * target.price
    gain = saving_h * settings.horizon_h if saving_h != float("inf") else float("inf")
    numbers: dict[str, object] = {
        **current.numbers("current"), **target.numbers("target"),
        "saving_usd_h": round(saving_h, 6) if saving_h != float("inf") else "inf",
        "horizon_h": settings.horizon_h, "gain_over_horizon_usd": round(gain, 6) if gain != float("inf")
        else "inf", "move_cost_usd": round(move_cost, 6), "min_saving_fraction": settings.min_saving_fraction,
    }
    if not target.acceptable:
        return False, numbers
    if not current.acceptable:
        numbers["current_unacceptable"] = current.why_not
        return True, numbers
    enough = saving_h >= settings.min_saving_fraction * current.hourly_cost and saving_h > 0
    return enough and gain > move_cost, numbers


def _auto_switch(plan: _Plan) -> None:
    toggles = plan.workload.toggles
    primary = plan.primary()
    if (not toggles.auto_switching or toggles.emergency_only or primary is None or not primary.ready
            or primary.pool.market is not Market.SPOT or primary.interruption_notice
            or primary.rebalance_notice or plan.in_cooldown()):
        return
    current = plan.option(primary.pool)
    ready = [r for r in plan.healthy_replicas(ready=True) if r.pool != primary.pool]
    if ready:
        best = min(ready, key=lambda r: plan.option(r.pool).hourly_cost)
        ok, numbers = worth_moving(plan, current, plan.option(best.pool), sunk=True)
        if ok:
            plan.promote(best, primary, Trigger.SWITCH, "a ready replica's pool is cheaper: move to it",
                         numbers)
        return
    if plan.healthy_replicas():
        return  # a replica is booting: decide again when it is ready
    others = plan.candidates(Market.SPOT, {primary.pool.pool_id} | plan.blocked_pools)
    if not others:
        return
    ok, numbers = worth_moving(plan, current, others[0], sunk=False)
    if ok:
        plan.launch(others, Role.REPLICA, Trigger.SWITCH,
                    "a cheaper pool saves more over the horizon than moving costs: start the move", numbers)


def _tidy_replicas(plan: _Plan) -> None:
    """Keep at most the one standby `manual_replica` asks for; a replica nobody needs is demoted."""
    primary = plan.primary()
    if primary is None:
        return
    keep_standby = plan.workload.toggles.manual_replica
    ready = sorted(plan.healthy_replicas(ready=True),
                   key=lambda r: (r.pool == primary.pool, r.pool.az == primary.pool.az,
                                  plan.option(r.pool).hourly_cost, r.instance_id))
    for index, replica in enumerate(ready):
        if keep_standby and index == 0 and replica.pool != primary.pool:
            continue
        plan.demote(replica, Trigger.CLEANUP, "replica not needed: no notice, not a better pool, no standby"
                    " asked for", {"replica_pool": replica.pool.pool_id, "manual_replica": keep_standby})
    if keep_standby and not plan.healthy_replicas():
        plan.launch(plan.launch_order({primary.pool.pool_id} | plan.blocked_pools, primary.pool.az),
                    Role.REPLICA, Trigger.STANDBY, "manual_replica: keep a standby in another pool (another AZ"
                    " where possible)", {"primary_pool": primary.pool.pool_id})


def _terminate_zombies(plan: _Plan) -> None:
    """Terminate what was already a zombie before this decision, once a primary really serves.

    Not an instance demoted by this very decision: its successor's promotion is still to be carried out,
    and until its tags are written the old instance is all the workload has. Not a zombie under an
    interruption notice either: it drains until AWS reclaims it at the notice's time; a terminate would only
    cut that short."""
    if not plan.workload.toggles.auto_terminate:
        return
    # Only while the primary as the caller knows it (not as planned) is ready and healthy: never the last one.
    serving = [i for i in plan.workload.instances
               if i.role is Role.PRIMARY and i.ready and not i.interruption_notice
               and any(p.instance_id == i.instance_id and p.role is Role.PRIMARY for p in plan.instances)]
    if not serving:
        return
    already = {i.instance_id for i in plan.workload.instances if i.role is Role.ZOMBIE}
    for zombie in plan.live(Role.ZOMBIE):
        if zombie.instance_id not in already or zombie.interruption_notice:
            continue
        plan.actions.append(Action(
            kind=ActionKind.TERMINATE, trigger=Trigger.CLEANUP, instance_id=zombie.instance_id,
            rationale=Rationale(text="auto_terminate: the zombie was replaced and another instance serves",
                                numbers={"zombie_pool": zombie.pool.pool_id,
                                         "serving": [i.instance_id for i in serving]}),
        ))


def decide(workload: WorkloadView, market: MarketView, risk: RiskView, now: datetime,
           event: Event | None = None) -> Decision:
    """What to do for `workload` now. Pure: the same inputs always give the same decision."""
    plan = _Plan(workload=workload, market=market, risk=risk, now=now, instances=list(workload.instances))
    _apply_event(plan, event)
    _handle_interruptions(plan)
    _ensure_primary(plan)
    _handle_rebalance(plan)
    _return_to_spot(plan)
    _auto_switch(plan)
    _tidy_replicas(plan)
    _terminate_zombies(plan)
    actions = plan.actions
    if not actions:
        primary = plan.primary()
        text = "nothing to do"
        if plan.in_cooldown():
            text += " (in cooldown after the last move)"
        numbers: dict[str, object] = plan.option(primary.pool).numbers("current") if primary else {}
        actions = [Action(kind=ActionKind.NOTHING, trigger=Trigger.NONE,
                          rationale=Rationale(text=text, numbers=numbers))]
    return Decision(workload_id=workload.workload_id, at=now, actions=actions)


__all__ = ["Option", "decide", "worth_moving"]
