"""`oracle`: the cheapest schedule with hindsight, by dynamic programming over the price grid.

It knows every price and every interruption in advance, so it is never interrupted and never down: it
leaves a pool before the step in which that pool would interrupt it, and pays for the new instance
during its boot (a move is make-before-break). That is the limit no real strategy can beat on cost
with zero downtime.
"""

from __future__ import annotations

import numpy as np

from spot_optimizer.backtest.scenario import Scenario
from spot_optimizer.backtest.sim import Outcome, Progress


def run_oracle(s: Scenario, progress: Progress | None = None) -> Outcome:
    n, pools, steps = s.config.instances, len(s.pools), s.grid.steps
    step_h = s.grid.step_s / 3600.0
    boot_h = s.config.boot_time_s / 3600.0
    price = np.where(np.isnan(s.prices), np.inf, s.prices)  # (pools, steps)
    step_cost = price * step_h
    move_cost = price * boot_h  # entering pool p at step k: its instance booted during the step before
    banned: dict[int, list[tuple[int, int]]] = {}
    for w in range(n):
        for p in range(s.n_spot):
            for hit in s.draws[w][p]:
                banned.setdefault(s.step(hit.at), []).append((w, p))
    value = np.tile(step_cost[:, 0], (n, 1))
    for w, p in banned.get(0, []):
        value[w, p] = np.inf
    stay_bits = np.zeros((steps, n, (pools + 7) // 8), dtype=np.uint8)
    came_from = np.zeros((steps, n), dtype=np.int32)
    for k in range(1, steps):
        best = value.argmin(axis=1)
        moved = value[np.arange(n), best][:, None] + move_cost[:, k][None, :]
        stay = value <= moved
        value = np.where(stay, value, moved) + step_cost[:, k][None, :]
        for w, p in banned.get(k, []):
            value[w, p] = np.inf
        stay_bits[k] = np.packbits(stay, axis=1)
        came_from[k] = best
        if progress is not None and k % 5000 == 0:
            progress(k / steps)
    if progress is not None:
        progress(1.0)
    return _walk_back(s, value, stay_bits, came_from, step_cost, move_cost)


def _walk_back(s: Scenario, value: np.ndarray, stay_bits: np.ndarray, came_from: np.ndarray,
               step_cost: np.ndarray, move_cost: np.ndarray) -> Outcome:
    n, pools, steps = s.config.instances, len(s.pools), s.grid.steps
    out = Outcome()
    per_step = np.zeros(steps)
    for w in range(n):
        pool = int(value[w].argmin())
        path = np.empty(steps, dtype=np.int64)
        for k in range(steps - 1, -1, -1):
            path[k] = pool
            if k > 0 and not np.unpackbits(stay_bits[k, w], count=pools)[pool]:
                pool = int(came_from[k, w])
        moves = np.flatnonzero(path[1:] != path[:-1]) + 1
        per_step += step_cost[path, np.arange(steps)]
        per_step[moves] += move_cost[path[moves], moves]
        out.switches += len(moves)
        out.ondemand_hours += float(np.sum(path >= s.n_spot)) * s.grid.step_s / 3600.0
    out.cost_usd = float(per_step.sum())
    marks = np.arange(1, int(s.horizon_s // 3600) + 1) * 3600.0
    cumulative = np.cumsum(per_step)
    out.curve = cumulative[np.minimum((marks // s.grid.step_s).astype(int), steps) - 1]
    return out
