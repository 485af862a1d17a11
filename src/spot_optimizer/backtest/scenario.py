"""The replay's world: pools with prices on a grid, on-demand prices, and the seeded interruption draws
that every strategy shares."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from spot_optimizer.backtest.data import PriceGrid
from spot_optimizer.core.models import Market, Pool
from spot_optimizer.core.risk import UNKNOWN_BUCKET, bucket_hazard


@dataclass(frozen=True)
class SimConfig:
    instances: int = 10
    seed: int = 0
    boot_time_s: float = 180.0
    notice_s: float = 120.0  # the spot two-minute warning
    rebalance_share: float = 0.5  # share of interruptions preceded by a rebalance recommendation
    rebalance_lead_s: tuple[float, float] = (5 * 60.0, 30 * 60.0)  # how long before, drawn uniformly
    interruption_scale: float = 1.0  # multiplies every pool's interruption rate (0 turns them off)
    tick_s: float = 3600.0  # how often strategies that poll re-evaluate


@dataclass(frozen=True)
class Interruption:
    at: float  # seconds from the start of the window
    rebalance_at: float | None


@dataclass
class Scenario:
    grid: PriceGrid
    ondemand: dict[str, float]
    buckets: dict[str, int]
    region: str
    config: SimConfig
    # filled by __post_init__
    pools: list[Pool] = field(default_factory=list)
    prices: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    cum: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    draws: list[list[list[Interruption]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        spot = [Pool(region=self.region, instance_type=t, az=az) for t, az in self.grid.pools]
        ondemand = [p.model_copy(update={"market": Market.ON_DEMAND}) for p in spot]
        self.pools = spot + ondemand
        od_rows = np.array([[self.ondemand[t]] * self.grid.steps for t, _ in self.grid.pools]).reshape(
            len(spot), self.grid.steps
        )
        self.prices = np.vstack([self.grid.prices, od_rows])
        step_h = self.grid.step_s / 3600.0
        filled = np.nan_to_num(self.prices, nan=0.0)
        self.cum = np.concatenate([np.zeros((len(self.pools), 1)), np.cumsum(filled * step_h, axis=1)], axis=1)
        self.draws = self._draw()

    # --- shape -------------------------------------------------------------------------------------
    @property
    def n_spot(self) -> int:
        return len(self.grid.pools)

    @property
    def horizon_s(self) -> float:
        return float(self.grid.steps * self.grid.step_s)

    def is_spot(self, pool: int) -> bool:
        return pool < self.n_spot

    def ondemand_of(self, pool: int) -> int:
        return pool if pool >= self.n_spot else pool + self.n_spot

    def step(self, t: float) -> int:
        return min(int(t // self.grid.step_s), self.grid.steps - 1)

    def price(self, pool: int, t: float) -> float:
        return float(self.prices[pool, self.step(t)])

    def bucket(self, pool: int) -> int:
        return self.buckets.get(self.pools[pool].instance_type, UNKNOWN_BUCKET)

    def cost(self, pool: int, a: float, b: float) -> float:
        """USD paid for one instance in `pool` from `a` to `b` seconds (prices piecewise constant)."""
        return self._integral(pool, b) - self._integral(pool, a)

    def cost_curve(self, pool: int, a: float, b: float, marks: np.ndarray) -> np.ndarray:
        """Cumulative cost of one instance (from `a` to `b`) at each of `marks`."""
        x = np.clip(np.clip(marks, a, b), 0.0, self.horizon_s)
        k = np.minimum((x // self.grid.step_s).astype(int), self.grid.steps - 1)
        price = np.nan_to_num(self.prices[pool, k], nan=0.0)
        return self.cum[pool, k] + price * (x - k * self.grid.step_s) / 3600.0 - self._integral(pool, a)

    def _integral(self, pool: int, x: float) -> float:
        x = min(max(x, 0.0), self.horizon_s)
        k = min(int(x // self.grid.step_s), self.grid.steps - 1)
        price = self.prices[pool, k]
        within = 0.0 if math.isnan(price) else price * (x - k * self.grid.step_s) / 3600.0
        return float(self.cum[pool, k] + within)

    # --- interruptions -----------------------------------------------------------------------------
    def _draw(self) -> list[list[list[Interruption]]]:
        """Per workload and spot pool, a Poisson process of interruptions at the advisor's rate.

        Drawn once, in a fixed order, so that every strategy meets exactly the same interruptions:
        an instance of workload n in pool p is interrupted at the first draw after its launch."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        hours = self.horizon_s / 3600.0
        result: list[list[list[Interruption]]] = []
        for _ in range(cfg.instances):
            per_pool: list[list[Interruption]] = []
            for pool in range(self.n_spot):
                rate = bucket_hazard(self.bucket(pool)) * cfg.interruption_scale
                count = int(rng.poisson(rate * hours))
                times = np.sort(rng.uniform(0.0, self.horizon_s, size=count))
                warned = rng.uniform(size=count) < cfg.rebalance_share
                leads = rng.uniform(cfg.rebalance_lead_s[0], cfg.rebalance_lead_s[1], size=count)
                per_pool.append([
                    Interruption(at=float(round(t)), rebalance_at=float(round(t - lead)) if w else None)
                    for t, w, lead in zip(times, warned, leads, strict=True)
                ])
            result.append(per_pool)
        return result

    def next_interruption(self, workload: int, pool: int, after: float) -> Interruption | None:
        if not self.is_spot(pool):
            return None
        for item in self.draws[workload][pool]:
            if item.at > after:
                return item
        return None
