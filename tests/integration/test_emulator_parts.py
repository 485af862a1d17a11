"""The emulator's small parts without processes: clock, fault rules, interruption planning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spot_optimizer.emulator.clock import EmulatedClock
from spot_optimizer.emulator.faults import CallContext, Fault, FaultInjector
from spot_optimizer.emulator.interruptions import (
    AdvisorPlanner,
    EventKind,
    InterruptionSchedule,
    PlannedEvent,
    SpotAdvisor,
)


class FakeTime:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_clock_maps_wall_time_to_trace_time_at_speed() -> None:
    t = FakeTime()
    trace0 = datetime(2022, 1, 1, tzinfo=UTC)
    clock = EmulatedClock(speed=60, trace_start=trace0, time_fn=t)
    t.now += 10
    assert clock.elapsed() == 600
    assert clock.trace_time() == trace0 + timedelta(minutes=10)
    assert clock.after(120) == datetime.fromtimestamp(t.now + 2, UTC)  # a notice lasts 2 s at 60x
    clock.set_speed(1)
    t.now += 10
    assert clock.elapsed() == 610  # continuous across a speed change
    assert clock.wall_of_trace(trace0 + timedelta(seconds=610)) == t.now


def test_pool_fault_hits_only_its_pool_and_market_and_count() -> None:
    faults = FaultInjector()
    faults.add(Fault("InsufficientInstanceCapacity", ["RunInstances"], [("m5.large", "eu-west-1a")], "spot", count=2))
    hit = CallContext("ec2", "RunInstances", "m5.large", "eu-west-1a", "spot")
    assert faults.match(CallContext("ec2", "RunInstances", "m5.large", "eu-west-1b", "spot"), 0)[1] is None
    assert faults.match(CallContext("ec2", "RunInstances", "m5.large", "eu-west-1a", "on-demand"), 0)[1] is None
    assert faults.match(CallContext("ec2", "DescribeInstances"), 0)[1] is None
    assert faults.match(hit, 0)[1] is not None
    assert faults.match(hit, 0)[1] is not None
    assert faults.match(hit, 0)[1] is None  # count used up
    assert faults.list() == []


def test_scheduled_fault_window() -> None:
    faults = FaultInjector()
    faults.throttle(["DescribeSpotPriceHistory"], start_s=100, end_s=200)
    call = CallContext("ec2", "DescribeSpotPriceHistory")
    assert [faults.match(call, t)[1] is not None for t in (50, 150, 250)] == [False, True, False]


def test_fault_from_control_api_json() -> None:
    fault = Fault.from_dict({"error_code": "InsufficientInstanceCapacity", "pools": ["c5.large/eu-west-1c"]})
    assert fault.pools == [("c5.large", "eu-west-1c")] and fault.status() == 500
    assert Fault.from_dict({"error_code": "RequestLimitExceeded"}).status() == 503


def test_schedule_holds_notices_until_the_instance_is_served() -> None:
    schedule = InterruptionSchedule()
    schedule.add(PlannedEvent(5, "i-1", EventKind.INTERRUPTION))
    schedule.add(PlannedEvent(5, "i-2", EventKind.TERMINATE))
    assert [e.instance_id for e in schedule.due(10, ready=set())] == ["i-2"]
    assert [e.instance_id for e in schedule.due(10, ready={"i-1"})] == ["i-1"]
    assert schedule.due(20, ready={"i-1"}) == []


def test_advisor_planner_interrupts_risky_types_more_often() -> None:
    advisor = SpotAdvisor({"eu-west-1": {"safe.large": 0, "risky.large": 4}})
    planner = AdvisorPlanner(advisor, "eu-west-1", seed=1, horizon_s=7 * 24 * 3600)

    def interrupted(itype: str) -> int:
        return sum(
            any(e.kind == EventKind.INTERRUPTION for e in planner.plan(f"i-{n}", itype, 0.0)) for n in range(2000)
        )

    safe, risky = interrupted("safe.large"), interrupted("risky.large")
    # 7 days of a 2.5 %/month vs 25 %/month hazard: ~12 vs ~132 of 2000
    assert safe < risky / 4
    again = AdvisorPlanner(advisor, "eu-west-1", seed=1).plan("i-x", "risky.large", 0.0)
    assert again == AdvisorPlanner(advisor, "eu-west-1", seed=1).plan("i-x", "risky.large", 0.0)  # seeded


def test_real_spot_advisor_file_has_buckets(shared_data) -> None:  # noqa: ANN001
    advisor = SpotAdvisor.load(shared_data / "spot-advisor" / "spot-advisor-data_2025-06-28.json")
    assert advisor.bucket("eu-west-1", "m5.large") in range(5)
    assert advisor.hourly_rate("eu-west-1", "m5.large") > 0
