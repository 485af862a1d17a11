"""Example tests: one per behaviour of the decision engine."""

from datetime import UTC, datetime, timedelta

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

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
REGION = "eu-west-1"
TYPES = ["m5.large", "m5a.large"]
AZS = ["eu-west-1a", "eu-west-1b"]
ONDEMAND = {"m5.large": 0.107, "m5a.large": 0.096}


def pool(t: str = "m5.large", az: str = "eu-west-1a", market: Market = Market.SPOT) -> Pool:
    return Pool(region=REGION, instance_type=t, az=az, market=market)


def inst(iid: str, p: Pool, role: Role = Role.PRIMARY, **kw: object) -> InstanceView:
    return InstanceView(instance_id=iid, pool=p, role=role, **kw)  # type: ignore[arg-type]


def market(prices: dict[Pool, float] | None = None) -> MarketView:
    default = {pool(t, az): 0.04 for t in TYPES for az in AZS}
    default.update(prices or {})
    return MarketView(spot={p.pool_id: v for p, v in default.items()}, ondemand=ONDEMAND)


def risk(events: list[PoolEvent] | None = None, buckets: dict[str, int] | None = None):  # type: ignore[no-untyped-def]
    pools = [pool(t, az, m) for t in TYPES for az in AZS for m in Market]
    return assess_risk(pools, buckets or {"m5.large": 0, "m5a.large": 0}, events or [], NOW, Settings())


def workload(instances: list[InstanceView], **toggles: bool) -> WorkloadView:
    return WorkloadView(workload_id="w1", region=REGION, instance_types=TYPES, azs=AZS, instances=instances,
                        toggles=Toggles(**toggles))


def kinds(decision) -> list[ActionKind]:  # type: ignore[no-untyped-def]
    return [a.kind for a in decision.actions]


def test_notice_promotes_a_ready_replica_and_demotes_the_primary() -> None:
    w = workload([inst("p", pool()), inst("r", pool("m5a.large", "eu-west-1b"), Role.REPLICA)])
    d = decide(w, market(), risk(), NOW, Event(kind=EventKind.INTERRUPTION, at=NOW, instance_id="p"))
    promote = d.actions[0]
    assert promote.kind is ActionKind.PROMOTE
    assert (promote.instance_id, promote.old_instance_id) == ("r", "p")


def test_notice_without_replica_launches_replacement_elsewhere_with_on_demand_last() -> None:
    w = workload([inst("p", pool())])
    d = decide(w, market(), risk(), NOW, Event(kind=EventKind.INTERRUPTION, at=NOW, instance_id="p"))
    launch = next(a for a in d.actions if a.is_launch)
    assert launch.role is Role.PRIMARY and launch.pool != pool()
    assert launch.fallback_pools[-1].market is Market.ON_DEMAND
    assert ActionKind.DEMOTE in kinds(d)
    assert ActionKind.TERMINATE not in kinds(d)  # never the last running instance


def test_capacity_errors_move_on_pool_by_pool_then_to_on_demand() -> None:
    w = workload([inst("p", pool(), interruption_notice=True)])
    spot_pools = [pool(t, az) for t in TYPES for az in AZS]
    events = [PoolEvent(pool_id=p.pool_id, kind=PoolEventKind.CAPACITY_ERROR, at=NOW) for p in spot_pools]
    d = decide(w, market(), risk(events), NOW)
    launch = next(a for a in d.actions if a.is_launch)
    assert launch.kind is ActionKind.FALLBACK_TO_ON_DEMAND
    assert launch.pool is not None and launch.pool.market is Market.ON_DEMAND
    one_blocked = decide(w, market(), risk(events[1:2]), NOW)
    chosen = next(a for a in one_blocked.actions if a.is_launch).pool
    assert chosen is not None and chosen.pool_id != spot_pools[1].pool_id


def test_zombies_are_terminated_only_with_auto_terminate() -> None:
    instances = [inst("p", pool()), inst("z", pool("m5a.large"), Role.ZOMBIE)]
    assert ActionKind.TERMINATE not in kinds(decide(workload(instances), market(), risk(), NOW))
    d = decide(workload(instances, auto_terminate=True), market(), risk(), NOW)
    assert [a.instance_id for a in d.actions if a.kind is ActionKind.TERMINATE] == ["z"]


def test_a_primary_demoted_by_a_notice_is_not_terminated_in_the_same_decision_nor_while_it_drains() -> None:
    """The promotion is still to be carried out when the decision is made: the old primary is all there is
    until then; afterwards it drains until AWS reclaims it."""
    replica = inst("r", pool("m5a.large", "eu-west-1b"), Role.REPLICA)
    w = workload([inst("p", pool()), replica], auto_terminate=True)
    d = decide(w, market(), risk(), NOW, Event(kind=EventKind.INTERRUPTION, at=NOW, instance_id="p"))
    assert ActionKind.PROMOTE in kinds(d) and ActionKind.TERMINATE not in kinds(d)
    # The promotion is done: the old primary is a zombie with its notice, the replica serves.
    after = workload([inst("p", pool(), Role.ZOMBIE, interruption_notice=True),
                      inst("r", pool("m5a.large", "eu-west-1b"))], auto_terminate=True)
    assert ActionKind.TERMINATE not in kinds(decide(after, market(), risk(), NOW))
    # A zombie without a notice (a finished switch) goes, while the new primary serves.
    switched = workload([inst("z", pool(), Role.ZOMBIE), inst("r", pool("m5a.large", "eu-west-1b"))],
                        auto_terminate=True)
    assert [a.instance_id for a in decide(switched, market(), risk(), NOW).actions
            if a.kind is ActionKind.TERMINATE] == ["z"]
    # ... but not while no primary is ready to serve.
    booting = workload([inst("z", pool(), Role.ZOMBIE), inst("r", pool("m5a.large", "eu-west-1b"), ready=False)],
                       auto_terminate=True)
    assert ActionKind.TERMINATE not in kinds(decide(booting, market(), risk(), NOW))


def test_rebalance_starts_a_replica_in_another_pool_then_moves_to_it() -> None:
    d = decide(workload([inst("p", pool())]), market(), risk(), NOW,
               Event(kind=EventKind.REBALANCE, at=NOW, instance_id="p"))
    launch = next(a for a in d.actions if a.is_launch)
    assert launch.trigger is Trigger.REBALANCE and launch.role is Role.REPLICA and launch.pool != pool()
    ready = workload([inst("p", pool(), rebalance_notice=True),
                      inst("r", pool("m5a.large", "eu-west-1b"), Role.REPLICA)])
    assert decide(ready, market(), risk(), NOW).actions[0].kind is ActionKind.PROMOTE


def test_auto_switch_moves_to_a_much_cheaper_pool_only_when_enabled() -> None:
    cheap = {pool("m5a.large", "eu-west-1b"): 0.02}
    w = [inst("p", pool())]
    assert kinds(decide(workload(w), market(cheap), risk(), NOW)) == [ActionKind.NOTHING]
    d = decide(workload(w, auto_switching=True), market(cheap), risk(), NOW)
    assert d.actions[0].kind is ActionKind.LAUNCH and d.actions[0].trigger is Trigger.SWITCH
    assert d.actions[0].rationale.numbers["saving_usd_h"] > 0
    emergency = decide(workload(w, auto_switching=True, emergency_only=True), market(cheap), risk(), NOW)
    assert kinds(emergency) == [ActionKind.NOTHING]


def test_hysteresis_ignores_a_tiny_saving_and_cooldown_holds_a_big_one() -> None:
    w = [inst("p", pool())]
    tiny = {pool("m5a.large", "eu-west-1b"): 0.0399}
    assert kinds(decide(workload(w, auto_switching=True), market(tiny), risk(), NOW)) == [ActionKind.NOTHING]
    cooling = workload(w, auto_switching=True).model_copy(update={"last_move_at": NOW - timedelta(minutes=5)})
    d = decide(cooling, market({pool("m5a.large", "eu-west-1b"): 0.01}), risk(), NOW)
    assert kinds(d) == [ActionKind.NOTHING] and "cooldown" in d.actions[0].rationale.text


def test_on_demand_fallback_returns_to_spot_when_a_safe_pool_is_there() -> None:
    w = workload([inst("p", pool(market=Market.ON_DEMAND))])
    d = decide(w, market(), risk(), NOW)
    assert d.actions[0].kind is ActionKind.RETURN_TO_SPOT
    assert d.actions[0].pool is not None and d.actions[0].pool.market is Market.SPOT
    risky = decide(w, market(), risk(buckets={"m5.large": 4, "m5a.large": 4}), NOW)
    assert kinds(risky) == [ActionKind.NOTHING]  # every spot pool is above the risk limit
    ready = workload([inst("p", pool(market=Market.ON_DEMAND)), inst("r", pool(), Role.REPLICA)])
    assert decide(ready, market(), risk(), NOW).actions[0].kind is ActionKind.PROMOTE


def test_manual_replica_keeps_a_standby_in_another_az() -> None:
    d = decide(workload([inst("p", pool())], manual_replica=True), market(), risk(), NOW)
    launch = d.actions[0]
    assert launch.trigger is Trigger.STANDBY and launch.pool is not None and launch.pool.az != "eu-west-1a"


def test_a_replica_nobody_needs_is_demoted() -> None:
    w = workload([inst("p", pool()), inst("r", pool("m5a.large", "eu-west-1b"), Role.REPLICA)])
    assert decide(w, market(), risk(), NOW).actions[0].kind is ActionKind.DEMOTE


def test_spot_price_above_the_cap_is_never_chosen() -> None:
    expensive = {pool(t, az): 0.2 for t in TYPES for az in AZS if (t, az) != ("m5a.large", "eu-west-1b")}
    w = workload([inst("p", pool(), interruption_notice=True)])
    launch = next(a for a in decide(w, market(expensive), risk(), NOW, None).actions if a.is_launch)
    assert launch.pool == pool("m5a.large", "eu-west-1b")
    assert launch.max_price is not None and launch.max_price < ONDEMAND["m5a.large"]


def test_notice_before_any_price_is_known_still_launches_a_replacement() -> None:
    """A fresh start or a price outage must not leave a dying primary without a successor."""
    w = workload([inst("p", pool())])
    empty = MarketView(spot={}, ondemand={})
    d = decide(w, empty, risk(), NOW, Event(kind=EventKind.INTERRUPTION, at=NOW, instance_id="p"))
    launch = next(a for a in d.actions if a.kind in (ActionKind.LAUNCH, ActionKind.FALLBACK_TO_ON_DEMAND))
    assert launch.pool is not None and launch.pool.market is Market.SPOT
    assert launch.pool.pool_id != pool().pool_id  # not the dying pool
    assert launch.fallback_pools and launch.fallback_pools[-1].market is Market.ON_DEMAND
    assert launch.rationale.numbers["target_price_usd_h"] is None  # unknown, said so, not Infinity


def test_a_replacement_already_launched_is_not_launched_again() -> None:
    """A later pass that still sees the dying primary (e.g. its tags still say primary) must not launch a
    second replacement while the first one boots."""
    booting = inst("r1", pool(az="eu-west-1b"), Role.PRIMARY, ready=False)
    w = workload([inst("p", pool(), interruption_notice=True), booting])
    d = decide(w, market(), risk(), NOW, Event(kind=EventKind.TICK, at=NOW))
    assert ActionKind.LAUNCH not in kinds(d) and ActionKind.FALLBACK_TO_ON_DEMAND not in kinds(d)
