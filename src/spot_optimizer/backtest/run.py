"""Run every strategy over the same scenario and summarise them in the shape `--json` prints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from spot_optimizer.backtest.data import (
    BacktestInputError,
    build_grid,
    load_advisor,
    load_ondemand,
    load_spot_prices,
)
from spot_optimizer.backtest.engine_strategy import SpotOptimizer
from spot_optimizer.backtest.oracle import run_oracle
from spot_optimizer.backtest.scenario import Scenario, SimConfig
from spot_optimizer.backtest.sim import CapacityOptimized, Greedy, OnDemand, Outcome, Progress, StayPut
from spot_optimizer.core.risk import UNKNOWN_BUCKET

STRATEGIES = ("on_demand", "stay_put", "greedy", "capacity_optimized", "spot_optimizer", "oracle")
STEP_S = 300  # the price grid and the oracle's resolution


@dataclass(frozen=True)
class BacktestRequest:
    prices: Path
    ondemand: Path
    advisor: Path
    region: str
    types: tuple[str, ...]
    start: datetime | None = None
    end: datetime | None = None
    config: SimConfig = SimConfig()


def load_scenario(req: BacktestRequest) -> Scenario:
    if not req.types:
        raise BacktestInputError("--types: give at least one instance type")
    wanted = set(req.types)
    records = load_spot_prices(req.prices, wanted)
    missing = sorted(wanted - {t for t, _ in records})
    if missing:
        raise BacktestInputError(f"{req.prices}: unknown instance type(s) {', '.join(missing)} (no price records)")
    ondemand = load_ondemand(req.ondemand, req.region, wanted)
    missing = sorted(wanted - set(ondemand))
    if missing:
        raise BacktestInputError(
            f"{req.ondemand}: no on-demand price for {', '.join(missing)} in region {req.region}"
        )
    buckets = load_advisor(req.advisor, req.region)
    if req.start and req.end and req.start >= req.end:
        raise BacktestInputError(f"{req.prices}: empty window, --start {req.start} is not before --end {req.end}")
    grid = build_grid(records, req.start, req.end, STEP_S, req.prices)
    return Scenario(grid=grid, ondemand=ondemand, buckets={t: buckets[t] for t in wanted if t in buckets},
                    region=req.region, config=req.config)


def run_strategies(scenario: Scenario, on_progress: Callable[[str, float], None] | None = None
                   ) -> dict[str, Outcome]:
    def hook(name: str) -> Progress | None:
        return None if on_progress is None else (lambda fraction: on_progress(name, fraction))

    results: dict[str, Outcome] = {}
    for cls in (OnDemand, StayPut, Greedy, CapacityOptimized, SpotOptimizer):
        results[cls.name] = cls(scenario).run(hook(cls.name))
    results["oracle"] = run_oracle(scenario, hook("oracle"))
    return results


def summarise(req: BacktestRequest, scenario: Scenario, results: dict[str, Outcome]) -> dict[str, Any]:
    reference = results["on_demand"].cost_usd
    strategies = {
        name: {
            "cost_usd": round(out.cost_usd, 4),
            "savings_pct": round(100.0 * (1.0 - out.cost_usd / reference), 3) if reference > 0 else 0.0,
            "switches": out.switches,
            "interruptions": out.interruptions,
            "downtime_s": round(out.downtime_s, 1),
            "ondemand_hours": round(out.ondemand_hours, 3),
        }
        for name, out in results.items()
    }
    cfg = scenario.config
    return {
        "strategies": strategies,
        "hours": round(scenario.horizon_s / 3600.0, 3),
        "pools": int((~np.isnan(scenario.grid.prices)).any(axis=1).sum()),  # spot pools with a price
        "inputs": {
            "prices": str(req.prices), "ondemand": str(req.ondemand), "advisor": str(req.advisor),
            "region": req.region, "types": list(req.types),
            "start": scenario.grid.start.isoformat(), "end": scenario.grid.end.isoformat(),
            "instances": cfg.instances, "seed": cfg.seed, "boot_time_s": cfg.boot_time_s,
            "rebalance_share": cfg.rebalance_share, "step_s": scenario.grid.step_s,
            "advisor_buckets": {t: scenario.buckets.get(t, UNKNOWN_BUCKET) for t in req.types},
            "advisor_missing": sorted(t for t in req.types if t not in scenario.buckets),
        },
    }


def backtest(req: BacktestRequest, on_progress: Callable[[str, float], None] | None = None
             ) -> tuple[dict[str, Any], Scenario, dict[str, Outcome]]:
    scenario = load_scenario(req)
    results = run_strategies(scenario, on_progress)
    return summarise(req, scenario, results), scenario, results
