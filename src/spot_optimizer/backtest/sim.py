"""Event-driven replay of one strategy over all workloads, with the scenario's shared draws.

Every strategy starts each workload with one ready instance, pays every instance from launch to end
(booting replicas and double-running included), and loses an instance at its pool's drawn interruption
time. Downtime is time with no ready instance at all.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from spot_optimizer.backtest.scenario import Scenario
from spot_optimizer.core.models import Role


class Kind(IntEnum):  # order = priority at equal times
    KILL = 0
    NOTICE = 1
    REBALANCE = 2
    READY = 3
    TICK = 4


@dataclass
class Inst:
    iid: int
    workload: int
    pool: int
    role: Role
    launched: float
    ready_at: float
    end: float | None = None
    notice: bool = False
    rebalance: bool = False
    interrupted: bool = False

    def alive(self) -> bool:
        return self.end is None

    def ready(self, t: float) -> bool:
        return self.end is None and self.ready_at <= t


@dataclass
class Outcome:
    cost_usd: float = 0.0
    switches: int = 0
    interruptions: int = 0
    downtime_s: float = 0.0
    ondemand_hours: float = 0.0
    curve: np.ndarray = field(default_factory=lambda: np.zeros(0))  # cumulative USD at each hour mark


Progress = Callable[[float], None]


class Strategy:
    """Base: holds the event queue and the instances; subclasses react to events."""

    name = "base"
    ticks = False

    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        self.cfg = scenario.config
        self.heap: list[tuple[float, int, int, int, int]] = []
        self.seq = 0
        self.insts: dict[int, Inst] = {}
        self.switches = 0

    # --- mechanics ---------------------------------------------------------------------------------
    def push(self, t: float, kind: Kind, workload: int, iid: int = -1) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, int(kind), self.seq, workload, iid))

    def launch(self, workload: int, pool: int, t: float, role: Role, ready_now: bool = False) -> Inst:
        iid = len(self.insts)
        ready_at = t if ready_now else t + self.cfg.boot_time_s
        inst = Inst(iid, workload, pool, role, launched=t, ready_at=ready_at)
        self.insts[iid] = inst
        if not ready_now:
            self.push(ready_at, Kind.READY, workload, iid)
        hit = self.s.next_interruption(workload, pool, t)
        if hit is not None and hit.at < self.s.horizon_s:
            self.push(hit.at, Kind.KILL, workload, iid)
            self.push(max(t, hit.at - self.cfg.notice_s), Kind.NOTICE, workload, iid)
            if hit.rebalance_at is not None and hit.rebalance_at >= t:
                self.push(hit.rebalance_at, Kind.REBALANCE, workload, iid)
        return inst

    def terminate(self, inst: Inst, t: float) -> None:
        if inst.end is None:
            inst.end = t

    def live(self, workload: int) -> list[Inst]:
        return [i for i in self.insts.values() if i.workload == workload and i.alive()]

    def primary(self, workload: int) -> Inst | None:
        found = [i for i in self.live(workload) if i.role is Role.PRIMARY]
        return found[0] if found else None

    def cheapest(self, t: float, exclude: frozenset[int] = frozenset(), pools: list[int] | None = None) -> int:
        """Cheapest spot pool with a known price now; on-demand of the cheapest type when none is left."""
        k = self.s.step(t)
        best, best_price = -1, float("inf")
        for pool in pools if pools is not None else range(self.s.n_spot):
            price = self.s.prices[pool, k]
            if pool not in exclude and not np.isnan(price) and price < best_price:
                best, best_price = pool, float(price)
        if best < 0:
            od = range(self.s.n_spot, len(self.s.pools))
            best = min(od, key=lambda p: float(self.s.prices[p, k]))
        return best

    # --- hooks -------------------------------------------------------------------------------------
    def start(self, workload: int) -> None:
        self.launch(workload, self.cheapest(0.0), 0.0, Role.PRIMARY, ready_now=True)

    def on_event(self, kind: Kind, inst: Inst | None, workload: int, t: float) -> None:
        if kind is Kind.KILL and inst is not None and inst.role is Role.PRIMARY:
            self.replace(inst, t)

    def replace(self, dead: Inst, t: float) -> None:
        """Baselines notice an interruption only when the instance is gone, then launch a new one."""
        self.launch(dead.workload, self.pick_replacement(t, dead.pool), t, Role.PRIMARY)
        self.switches += 1

    def pick_replacement(self, t: float, dead_pool: int) -> int:
        return self.cheapest(t, frozenset({dead_pool}))

    # --- the loop ----------------------------------------------------------------------------------
    def run(self, progress: Progress | None = None) -> Outcome:
        horizon = self.s.horizon_s
        for workload in range(self.cfg.instances):
            self.start(workload)
            if self.ticks:
                self.push(self.cfg.tick_s, Kind.TICK, workload)
        done_marks = 0.0
        while self.heap:
            t, kind_value, _, workload, iid = heapq.heappop(self.heap)
            if t >= horizon:
                break
            kind = Kind(kind_value)
            inst = self.insts.get(iid)
            if inst is not None and not inst.alive():
                continue  # the instance ended before this event: stale
            if kind is Kind.KILL and inst is not None:
                inst.end, inst.interrupted = t, True
            elif kind is Kind.NOTICE and inst is not None:
                inst.notice = True
            elif kind is Kind.REBALANCE and inst is not None:
                inst.rebalance = True
            elif kind is Kind.TICK:
                self.push(t + self.cfg.tick_s, Kind.TICK, workload)
            self.on_event(kind, inst, workload, t)
            if progress is not None and t - done_marks > 24 * 3600:
                done_marks = t
                progress(t / horizon)
        if progress is not None:
            progress(1.0)
        return self.outcome()

    def outcome(self) -> Outcome:
        s, horizon = self.s, self.s.horizon_s
        marks = np.arange(1, int(horizon // 3600) + 1) * 3600.0
        curve = np.zeros(len(marks))
        out = Outcome(switches=self.switches)
        for inst in self.insts.values():
            end = min(inst.end if inst.end is not None else horizon, horizon)
            out.cost_usd += s.cost(inst.pool, inst.launched, end)
            out.interruptions += int(inst.interrupted)
            if not s.is_spot(inst.pool):
                out.ondemand_hours += max(0.0, end - inst.launched) / 3600.0
            curve += s.cost_curve(inst.pool, inst.launched, end, marks)
        for workload in range(self.cfg.instances):
            spans = sorted((i.ready_at, min(i.end if i.end is not None else horizon, horizon))
                           for i in self.insts.values() if i.workload == workload)
            covered, reach = 0.0, 0.0
            for a, b in spans:
                a = max(a, reach)
                if b > a:
                    covered += b - a
                    reach = b
            out.downtime_s += horizon - covered
        out.curve = curve
        return out


class OnDemand(Strategy):
    name = "on_demand"

    def start(self, workload: int) -> None:
        k = 0
        pool = min(range(self.s.n_spot, len(self.s.pools)), key=lambda p: float(self.s.prices[p, k]))
        self.launch(workload, pool, 0.0, Role.PRIMARY, ready_now=True)


class StayPut(Strategy):
    """Cheapest spot pool at the start; replaced only when interrupted."""

    name = "stay_put"


class CapacityOptimized(Strategy):
    """Like AWS's price-capacity-optimized: the cheapest of the lowest-risk pools, at launch and on
    replacement only."""

    name = "capacity_optimized"

    def safest(self, t: float, exclude: frozenset[int]) -> int:
        k = self.s.step(t)
        priced = [p for p in range(self.s.n_spot) if p not in exclude and not np.isnan(self.s.prices[p, k])]
        if not priced:
            return self.cheapest(t, exclude)
        lowest = min(self.s.bucket(p) for p in priced)
        return self.cheapest(t, exclude, [p for p in priced if self.s.bucket(p) == lowest])

    def start(self, workload: int) -> None:
        self.launch(workload, self.safest(0.0, frozenset()), 0.0, Role.PRIMARY, ready_now=True)

    def pick_replacement(self, t: float, dead_pool: int) -> int:
        return self.safest(t, frozenset({dead_pool}))


class Greedy(Strategy):
    """Always the cheapest pool now: every tick, move (make-before-break) when another pool is cheaper."""

    name = "greedy"
    ticks = True

    def on_event(self, kind: Kind, inst: Inst | None, workload: int, t: float) -> None:
        primary = self.primary(workload)
        replicas = [i for i in self.live(workload) if i.role is Role.REPLICA]
        if kind is Kind.KILL and inst is not None:
            if inst.role is Role.PRIMARY:
                if replicas:  # the move in progress becomes the replacement
                    replicas[0].role = Role.PRIMARY
                    self.switches += 1
                else:
                    self.replace(inst, t)
        elif kind is Kind.READY and inst is not None and inst.role is Role.REPLICA and primary is not None:
            inst.role = Role.PRIMARY
            self.terminate(primary, t)
            self.switches += 1
        elif kind is Kind.TICK and primary is not None and primary.ready(t) and not replicas:
            target = self.cheapest(t)
            if target != primary.pool and self.s.price(target, t) < self.s.price(primary.pool, t):
                self.launch(workload, target, t, Role.REPLICA)
