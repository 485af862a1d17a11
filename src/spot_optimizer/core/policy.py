"""The operator's policy for the decision engine: every knob with a default that is safe to run with.

Costs are in USD, times in seconds, risks as the probability that an instance is interrupted within a
month (the unit AWS's Spot Instance Advisor uses), so that each number can be checked against a bill.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from spot_optimizer.core.models import Market


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    # Never pay more than this share of the on-demand price for spot: above it, spot's saving no
    # longer pays for its interruptions.
    max_spot_price_fraction: float = Field(default=0.8, gt=0.0, le=1.0)
    # Hysteresis: a voluntary move must lower the hourly cost by at least this share, so that two
    # pools whose prices wobble around each other never make the workload ping-pong.
    min_saving_fraction: float = Field(default=0.03, ge=0.0, lt=1.0)
    # After the primary changed, no voluntary move for this long (a notice is never held back).
    cooldown_s: float = Field(default=6 * 3600.0, ge=0.0)
    # How long we expect to stay in a new pool: the saving of a move is counted over this horizon.
    horizon_s: float = Field(default=24 * 3600.0, gt=0.0)
    # Weight of interruption risk against price: 0 ignores risk, 1 counts its expected cost.
    risk_weight: float = Field(default=1.0, ge=0.0)
    # What one interruption costs, in hours of the on-demand price (restart, cache warm-up, the
    # double-running of a replacement, the chance of downtime).
    interruption_cost_hours: float = Field(default=4.0, ge=0.0)
    # A spot pool whose monthly interruption probability is above this is not used at all.
    max_interruption_probability: float = Field(default=0.2, gt=0.0, le=1.0)
    allowed_markets: tuple[Market, ...] = (Market.SPOT, Market.ON_DEMAND)
    # From launch to ready to serve: the time both instances run (and are paid) during a move.
    boot_time_s: float = Field(default=180.0, ge=0.0)
    # Notices and capacity errors this system saw in a pool count less and less with this half-life.
    risk_half_life_s: float = Field(default=6 * 3600.0, gt=0.0)
    # After a capacity error, a pool is taken as having no capacity for this long.
    capacity_backoff_s: float = Field(default=15 * 60.0, ge=0.0)

    @property
    def boot_time_h(self) -> float:
        return self.boot_time_s / 3600.0

    @property
    def horizon_h(self) -> float:
        return self.horizon_s / 3600.0
