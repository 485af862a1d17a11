"""`spot_optimizer`: the backtest drives the very same `core.engine.decide` the server runs live."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from spot_optimizer.backtest.scenario import Scenario
from spot_optimizer.backtest.sim import Inst, Kind, Strategy
from spot_optimizer.core.decision import (
    ActionKind,
    Event,
    EventKind,
    InstanceView,
    MarketView,
    WorkloadView,
)
from spot_optimizer.core.engine import decide
from spot_optimizer.core.models import Role, Toggles
from spot_optimizer.core.policy import Settings
from spot_optimizer.core.risk import PoolEvent, PoolEventKind, RiskView, assess_risk

TOGGLES = Toggles(auto_switching=True, auto_terminate=True, manual_replica=False, emergency_only=False)
EVENT_OF = {Kind.NOTICE: EventKind.INTERRUPTION, Kind.REBALANCE: EventKind.REBALANCE}


class SpotOptimizer(Strategy):
    name = "spot_optimizer"
    ticks = True

    def __init__(self, scenario: Scenario, settings: Settings | None = None) -> None:
        super().__init__(scenario)
        self.settings = settings or Settings(boot_time_s=scenario.config.boot_time_s)
        self.start_at = scenario.grid.start
        self.index = {p.pool_id: i for i, p in enumerate(scenario.pools)}
        self.ondemand = dict(scenario.ondemand)
        self.types = sorted({t for t, _ in scenario.grid.pools})
        self.azs = sorted({az for _, az in scenario.grid.pools})
        self.seen: list[PoolEvent] = []  # what this system observed, shared by all its workloads
        self.last_move: dict[int, datetime] = {}
        self._market: tuple[int, MarketView] | None = None
        self._market_version = 0
        self._risk: tuple[tuple[int, int], RiskView] | None = None
        # The inputs of each workload's last quiet decision: decide is pure, so a tick with the same
        # inputs would only repeat "nothing to do" and is skipped (a large saving on long replays).
        self._quiet: dict[int, tuple[object, ...]] = {}

    def when(self, t: float) -> datetime:
        return self.start_at + timedelta(seconds=t)

    def market(self, t: float) -> MarketView:
        k = self.s.step(t)
        if self._market is None or self._market[0] != k:
            if self._market is not None and np.array_equal(
                self.s.prices[: self.s.n_spot, k], self.s.prices[: self.s.n_spot, self._market[0]], equal_nan=True
            ):
                self._market = (k, self._market[1])
                return self._market[1]
            self._market_version += 1
            spot = {self.s.pools[p].pool_id: float(self.s.prices[p, k]) for p in range(self.s.n_spot)
                    if self.s.prices[p, k] == self.s.prices[p, k]}  # NaN != NaN: no price yet
            self._market = (k, MarketView(spot=spot, ondemand=self.ondemand))
        return self._market[1]

    def risk(self, t: float) -> RiskView:
        # The advisor part never changes; the observed part decays slowly: recompute hourly or on news.
        # Events older than ten half-lives weigh under 0.1 %: leave them out so that quiet periods
        # have a constant risk view.
        now = self.when(t)
        horizon = 10 * self.settings.risk_half_life_s
        recent = [e for e in self.seen if (now - e.at).total_seconds() < horizon]
        key = (int(t // 3600) if recent else -1, len(self.seen), len(recent))
        if self._risk is None or self._risk[0] != key:
            view = assess_risk(self.s.pools, self.s.buckets, recent, now, self.settings)
            self._risk = (key, view)
        return self._risk[1]

    def view(self, workload: int, t: float) -> WorkloadView:
        instances = [
            InstanceView(instance_id=str(i.iid), pool=self.s.pools[i.pool], role=i.role, ready=i.ready(t),
                         interruption_notice=i.notice, rebalance_notice=i.rebalance)
            for i in self.live(workload)
        ]
        return WorkloadView(
            workload_id=str(workload), region=self.s.region, instance_types=self.types, azs=self.azs,
            instances=instances, toggles=TOGGLES, settings=self.settings,
            last_move_at=self.last_move.get(workload),
        )

    def start(self, workload: int) -> None:
        self.act(workload, 0.0, None, initial=True)

    def on_event(self, kind: Kind, inst: Inst | None, workload: int, t: float) -> None:
        event = None
        if inst is not None and kind in EVENT_OF:
            event = Event(kind=EVENT_OF[kind], at=self.when(t), instance_id=str(inst.iid))
            seen_kind = PoolEventKind.INTERRUPTION if kind is Kind.NOTICE else PoolEventKind.REBALANCE
            self.seen.append(PoolEvent(pool_id=self.s.pools[inst.pool].pool_id, kind=seen_kind, at=self.when(t)))
        key = self.inputs_key(workload, t) if kind is Kind.TICK else None
        if key is not None and self._quiet.get(workload) == key:
            return
        if self.act(workload, t, event) and key is not None:
            self._quiet[workload] = key
        else:
            self._quiet.pop(workload, None)

    def inputs_key(self, workload: int, t: float) -> tuple[object, ...]:
        self.market(t)
        self.risk(t)
        last = self.last_move.get(workload)
        cooling = last is not None and (self.when(t) - last).total_seconds() < self.settings.cooldown_s
        state = tuple((i.pool, i.role, i.ready(t), i.notice, i.rebalance) for i in self.live(workload))
        return (self._market_version, self._risk[0] if self._risk else None, cooling, state)

    def act(self, workload: int, t: float, event: Event | None, initial: bool = False) -> bool:
        """Run the engine and carry out its actions; True when it chose to do nothing."""
        decision = decide(self.view(workload, t), self.market(t), self.risk(t), self.when(t), event)
        quiet = all(a.kind is ActionKind.NOTHING for a in decision.actions)
        for action in decision.actions:
            if action.is_launch and action.pool is not None:
                role = action.role or Role.REPLICA
                self.launch(workload, self.index[action.pool.pool_id], t, role, ready_now=initial)
                if role is Role.PRIMARY and not initial:
                    self.switches += 1
                    self.last_move[workload] = self.when(t)
            elif action.instance_id is not None:
                inst = self.insts[int(action.instance_id)]
                if action.kind is ActionKind.PROMOTE:
                    inst.role = Role.PRIMARY
                    if action.old_instance_id is not None:
                        self.insts[int(action.old_instance_id)].role = Role.ZOMBIE
                    self.switches += 1
                    self.last_move[workload] = self.when(t)
                elif action.kind is ActionKind.DEMOTE:
                    inst.role = Role.ZOMBIE
                elif action.kind is ActionKind.TERMINATE:
                    self.terminate(inst, t)
        return quiet


__all__ = ["SpotOptimizer"]
