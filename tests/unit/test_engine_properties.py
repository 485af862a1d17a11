"""Properties of the decision engine over random workloads, prices, risks and events."""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from spot_optimizer.core.decision import (
    ActionKind,
    Event,
    EventKind,
    InstanceView,
    MarketView,
    Trigger,
    WorkloadView,
)
from spot_optimizer.core.engine import decide
from spot_optimizer.core.models import Market, Pool, Role, Toggles
from spot_optimizer.core.policy import Settings
from spot_optimizer.core.risk import PoolEvent, PoolEventKind, assess_risk

NOW = datetime(2026, 1, 1, tzinfo=UTC)
REGION = "eu-west-1"
ALL_TYPES = ["m5.large", "m5a.large", "c5.large"]
ALL_AZS = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
ONDEMAND = {"m5.large": 0.107, "m5a.large": 0.096, "c5.large": 0.096}
ALL_POOLS = [Pool(region=REGION, instance_type=t, az=az, market=m) for t in ALL_TYPES for az in ALL_AZS
             for m in Market]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[WorkloadView, MarketView, object, Event | None]:
    types = draw(st.lists(st.sampled_from(ALL_TYPES), min_size=1, max_size=3, unique=True))
    azs = draw(st.lists(st.sampled_from(ALL_AZS), min_size=1, max_size=3, unique=True))
    markets = draw(st.sampled_from([(Market.SPOT, Market.ON_DEMAND), (Market.SPOT,), (Market.ON_DEMAND,)]))
    count = draw(st.integers(min_value=0, max_value=4))
    instances = [
        InstanceView(
            instance_id=f"i-{n}",
            pool=draw(st.sampled_from(ALL_POOLS)),  # may even sit outside the allowed set
            role=draw(st.sampled_from(list(Role))),
            ready=draw(st.booleans()),
            interruption_notice=draw(st.booleans()),
            rebalance_notice=draw(st.booleans()),
        )
        for n in range(count)
    ]
    toggles = Toggles(**{name: draw(st.booleans()) for name in Toggles.model_fields})
    last_move = draw(st.none() | st.integers(min_value=0, max_value=48 * 3600).map(
        lambda s: NOW - timedelta(seconds=s)))
    workload = WorkloadView(workload_id="w", region=REGION, instance_types=types, azs=azs, instances=instances,
                            toggles=toggles, settings=Settings(allowed_markets=markets), last_move_at=last_move)
    spot = {p.pool_id: draw(st.floats(min_value=0.001, max_value=0.2)) for p in ALL_POOLS
            if p.market is Market.SPOT and draw(st.booleans())}
    market = MarketView(spot=spot, ondemand=ONDEMAND)
    events = [PoolEvent(pool_id=draw(st.sampled_from(ALL_POOLS)).pool_id, kind=draw(st.sampled_from(
        list(PoolEventKind))), at=NOW - timedelta(minutes=draw(st.integers(0, 600)))) for _ in range(
        draw(st.integers(0, 3)))]
    risk = assess_risk(ALL_POOLS, {t: draw(st.integers(0, 4)) for t in ALL_TYPES}, events, NOW, Settings())
    event = None
    if instances and draw(st.booleans()):
        event = Event(kind=draw(st.sampled_from([EventKind.INTERRUPTION, EventKind.REBALANCE])), at=NOW,
                      instance_id=draw(st.sampled_from(instances)).instance_id)
    return workload, market, risk, event


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_never_terminates_the_last_running_instance(case: tuple) -> None:  # type: ignore[type-arg]
    workload, market, risk, event = case
    decision = decide(workload, market, risk, NOW, event)
    terminated = {a.instance_id for a in decision.actions if a.kind is ActionKind.TERMINATE}
    running = [i for i in workload.instances if i.ready and not i.interruption_notice
               and not (event and event.kind is EventKind.INTERRUPTION and event.instance_id == i.instance_id)]
    if terminated:
        assert [i for i in running if i.instance_id not in terminated], "terminated the last running instance"


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_every_launch_is_inside_the_allowed_set(case: tuple) -> None:  # type: ignore[type-arg]
    workload, market, risk, event = case
    for action in decide(workload, market, risk, NOW, event).actions:
        for pool in ([action.pool] if action.is_launch else []) + list(action.fallback_pools):
            assert pool is not None and workload.allows(pool), pool


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_every_action_has_a_rationale(case: tuple) -> None:  # type: ignore[type-arg]
    workload, market, risk, event = case
    decision = decide(workload, market, risk, NOW, event)
    assert decision.actions
    for action in decision.actions:
        assert action.rationale.text.strip()
        assert isinstance(action.rationale.numbers, dict)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_no_voluntary_move_inside_the_cooldown(case: tuple) -> None:  # type: ignore[type-arg]
    workload, market, risk, event = case
    decision = decide(workload, market, risk, NOW, event)
    last = workload.last_move_at
    in_cooldown = last is not None and (NOW - last).total_seconds() < workload.settings.cooldown_s
    if in_cooldown or not workload.toggles.auto_switching or workload.toggles.emergency_only:
        assert all(a.trigger is not Trigger.SWITCH for a in decision.actions)


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_decide_is_pure(case: tuple) -> None:  # type: ignore[type-arg]
    workload, market, risk, event = case
    assert decide(workload, market, risk, NOW, event) == decide(workload, market, risk, NOW, event)
