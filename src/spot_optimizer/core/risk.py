"""Interruption risk per pool: the Spot Advisor bucket, raised by what this system has itself seen.

The advisor bucket is a slow, region-wide average; a notice or a capacity error we saw in a pool an
hour ago says far more about that pool today. So each observed event adds a hazard that halves every
`risk_half_life_s`, on top of the advisor's base rate. Times are always passed in: no clock here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from spot_optimizer.core.models import Market, Pool
from spot_optimizer.core.policy import Settings

HOURS_PER_MONTH = 730.0
# Spot Advisor bucket -> share of instances interrupted per month (the middle of each published range;
# ">20 %" is taken as 25 %).
BUCKET_MONTHLY_PROBABILITY: dict[int, float] = {0: 0.025, 1: 0.075, 2: 0.125, 3: 0.175, 4: 0.25}
# A type the advisor does not list is assumed to be average, not safe.
UNKNOWN_BUCKET = 2
# Hazard (interruptions per hour) that one fresh observed event adds to its pool, before decay:
# an interruption seen now makes a second one within the next day or so likely.
OBSERVED_HAZARD_PER_HOUR: dict[str, float] = {
    "interruption": 0.02,
    "rebalance": 0.01,
    "capacity_error": 0.01,
}


class PoolEventKind(StrEnum):
    INTERRUPTION = "interruption"
    REBALANCE = "rebalance"
    CAPACITY_ERROR = "capacity_error"


class PoolEvent(BaseModel):
    """Something this system saw happen in a pool."""

    model_config = ConfigDict(frozen=True)

    pool_id: str
    kind: PoolEventKind
    at: datetime


class PoolRisk(BaseModel):
    model_config = ConfigDict(frozen=True)

    hazard_per_hour: float  # expected interruptions per instance-hour
    bucket: int | None = None  # the Spot Advisor bucket, None for on-demand
    capacity_ok: bool = True  # False right after a capacity error

    @property
    def monthly_probability(self) -> float:
        return 1.0 - math.exp(-self.hazard_per_hour * HOURS_PER_MONTH)


ON_DEMAND_RISK = PoolRisk(hazard_per_hour=0.0)


class RiskView(BaseModel):
    """Risk of every pool the engine may consider; a pool not listed gets the unknown-bucket risk."""

    pools: dict[str, PoolRisk] = {}

    def of(self, pool: Pool, pool_id: str | None = None) -> PoolRisk:
        pool_id = pool_id or pool.pool_id
        if pool.market is Market.ON_DEMAND:
            return self.pools.get(pool_id, ON_DEMAND_RISK)
        found = self.pools.get(pool_id)
        return found if found is not None else PoolRisk(
            hazard_per_hour=bucket_hazard(UNKNOWN_BUCKET), bucket=UNKNOWN_BUCKET
        )


def bucket_hazard(bucket: int | None) -> float:
    """Interruptions per hour for an advisor bucket (monthly probability -> constant hazard)."""
    p = BUCKET_MONTHLY_PROBABILITY.get(UNKNOWN_BUCKET if bucket is None else bucket, 0.25)
    return -math.log(1.0 - p) / HOURS_PER_MONTH


def decay(age_s: float, half_life_s: float) -> float:
    """Weight of an event `age_s` old. Events from the future (clock skew) count fully."""
    return float(0.5 ** (max(age_s, 0.0) / half_life_s))


def assess_risk(
    pools: Iterable[Pool],
    buckets: Mapping[str, int],
    events: Iterable[PoolEvent],
    now: datetime,
    settings: Settings,
) -> RiskView:
    """Risk of each pool at `now`. `buckets` maps instance type -> advisor bucket (0..4)."""
    seen: dict[str, float] = {}
    blocked: set[str] = set()
    for event in events:
        age = (now - event.at).total_seconds()
        seen[event.pool_id] = seen.get(event.pool_id, 0.0) + OBSERVED_HAZARD_PER_HOUR[
            event.kind.value
        ] * decay(age, settings.risk_half_life_s)
        if event.kind is PoolEventKind.CAPACITY_ERROR and age < settings.capacity_backoff_s:
            blocked.add(event.pool_id)
    result: dict[str, PoolRisk] = {}
    for pool in pools:
        pid = pool.pool_id
        if pool.market is Market.ON_DEMAND:
            result[pid] = PoolRisk(hazard_per_hour=0.0, capacity_ok=pid not in blocked)
            continue
        bucket = buckets.get(pool.instance_type, UNKNOWN_BUCKET)
        result[pid] = PoolRisk(
            hazard_per_hour=bucket_hazard(bucket) + seen.get(pid, 0.0),
            bucket=bucket,
            capacity_ok=pid not in blocked,
        )
    return RiskView(pools=result)
