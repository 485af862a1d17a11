from datetime import UTC, datetime, timedelta

import pytest

from spot_optimizer.core.models import Market, Pool
from spot_optimizer.core.policy import Settings
from spot_optimizer.core.risk import PoolEvent, PoolEventKind, assess_risk, bucket_hazard

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POOL = Pool(region="eu-west-1", instance_type="m5.large", az="eu-west-1a")


def test_advisor_bucket_sets_the_base_monthly_probability() -> None:
    view = assess_risk([POOL], {"m5.large": 0}, [], NOW, Settings())
    assert view.of(POOL).monthly_probability == pytest.approx(0.025)
    assert bucket_hazard(4) > bucket_hazard(0)


def test_an_observed_notice_raises_risk_and_halves_each_half_life() -> None:
    settings = Settings(risk_half_life_s=3600)
    base = assess_risk([POOL], {"m5.large": 0}, [], NOW, settings).of(POOL).hazard_per_hour
    event = PoolEvent(pool_id=POOL.pool_id, kind=PoolEventKind.INTERRUPTION, at=NOW)
    fresh = assess_risk([POOL], {"m5.large": 0}, [event], NOW, settings).of(POOL).hazard_per_hour
    later = assess_risk([POOL], {"m5.large": 0}, [event], NOW + timedelta(hours=1), settings).of(POOL)
    assert fresh > base
    assert later.hazard_per_hour - base == pytest.approx((fresh - base) / 2)


def test_capacity_error_blocks_the_pool_only_for_the_backoff() -> None:
    settings = Settings(capacity_backoff_s=600)
    event = PoolEvent(pool_id=POOL.pool_id, kind=PoolEventKind.CAPACITY_ERROR, at=NOW)
    assert not assess_risk([POOL], {}, [event], NOW, settings).of(POOL).capacity_ok
    assert assess_risk([POOL], {}, [event], NOW + timedelta(seconds=601), settings).of(POOL).capacity_ok


def test_on_demand_pools_carry_no_interruption_risk() -> None:
    od = POOL.model_copy(update={"market": Market.ON_DEMAND})
    assert assess_risk([od], {"m5.large": 4}, [], NOW, Settings()).of(od).hazard_per_hour == 0.0
