"""When emulated instances get rebalance recommendations, interruption notices and scheduled events.

Scripted (tests, demo scenarios) or seeded from the Spot Advisor's interruption-frequency bucket.
Times are emulated seconds since the region started; the region's tick loop fires what is due.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class EventKind(StrEnum):
    REBALANCE = "rebalance"
    INTERRUPTION = "interruption"  # the two-minute notice; the termination follows `notice_s` later
    TERMINATE = "terminate"  # the end of an interruption notice: terminate (or stop) in moto
    SCHEDULED = "scheduled"  # a maintenance event in events/maintenance/scheduled


@dataclass
class PlannedEvent:
    at_s: float
    instance_id: str
    kind: EventKind
    notice_s: float = 120.0  # INTERRUPTION: emulated seconds from notice to action
    action: str = "terminate"  # INTERRUPTION/TERMINATE: terminate | stop | hibernate
    code: str = "system-reboot"  # SCHEDULED
    lead_s: float = 3600.0  # SCHEDULED: NotBefore is this far ahead
    source: str = "scripted"  # scripted | advisor
    event_id: int = 0
    fired_at: float | None = None  # wall time it fired

    def to_dict(self) -> dict[str, object]:
        return {k: (v.value if isinstance(v, StrEnum) else v) for k, v in self.__dict__.items()}


# Interruption-frequency buckets of the Spot Advisor -> assumed monthly interruption probability.
BUCKET_MONTHLY_RATE = {0: 0.025, 1: 0.075, 2: 0.125, 3: 0.175, 4: 0.25}
MONTH_S = 30 * 24 * 3600.0


class SpotAdvisor:
    """Interruption buckets per (region, instance type) from the Spot Advisor feed (Linux)."""

    def __init__(self, buckets: dict[str, dict[str, int]]) -> None:
        self.buckets = buckets

    @classmethod
    def load(cls, path: Path) -> SpotAdvisor:
        data = json.loads(path.read_text())
        buckets = {
            region: {itype: int(v["r"]) for itype, v in by_os.get("Linux", {}).items()}
            for region, by_os in data.get("spot_advisor", {}).items()
        }
        return cls(buckets)

    def bucket(self, region: str, instance_type: str) -> int | None:
        return self.buckets.get(region, {}).get(instance_type)

    def hourly_rate(self, region: str, instance_type: str) -> float:
        """Interruptions per emulated second (a constant hazard matching the monthly probability)."""
        bucket = self.bucket(region, instance_type)
        monthly = BUCKET_MONTHLY_RATE.get(bucket if bucket is not None else 2, 0.125)
        return -math.log(1.0 - monthly) / MONTH_S


class InterruptionSchedule:
    """Pending events, thread-safe. `due(now_s)` hands out what is due, once."""

    def __init__(self) -> None:
        self._events: list[PlannedEvent] = []
        self._fired: list[PlannedEvent] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, event: PlannedEvent) -> PlannedEvent:
        with self._lock:
            event.event_id = next(self._ids)
            self._events.append(event)
            self._events.sort(key=lambda e: (e.at_s, e.event_id))
            return event

    def due(self, now_s: float, ready: set[str] | None = None) -> list[PlannedEvent]:
        """Events with at_s <= now_s; notices for instances not in `ready` (no metadata service yet)
        stay pending, terminations do not wait."""
        with self._lock:
            out: list[PlannedEvent] = []
            keep: list[PlannedEvent] = []
            for event in self._events:
                waiting = ready is not None and event.kind != EventKind.TERMINATE and event.instance_id not in ready
                (out if event.at_s <= now_s and not waiting else keep).append(event)
            self._events = keep
            self._fired.extend(out)
            return out

    def pending(self, instance_id: str | None = None) -> list[PlannedEvent]:
        with self._lock:
            return [e for e in self._events if instance_id is None or e.instance_id == instance_id]

    def fired(self) -> list[PlannedEvent]:
        with self._lock:
            return list(self._fired)

    def cancel(self, instance_id: str) -> None:
        with self._lock:
            self._events = [e for e in self._events if e.instance_id != instance_id]


@dataclass
class AdvisorPlanner:
    """Draws each new spot instance's interruption from its Spot Advisor bucket (seeded).

    `rate_multiplier` compresses months of risk into a demo; `rebalance_probability` of the
    interruptions are preceded by a rebalance recommendation 5-30 emulated minutes earlier.
    """

    advisor: SpotAdvisor
    region: str
    seed: int = 0
    rate_multiplier: float = 1.0
    horizon_s: float = MONTH_S
    rebalance_probability: float = 0.8
    notice_s: float = 120.0
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def plan(self, instance_id: str, instance_type: str, now_s: float) -> list[PlannedEvent]:
        rate = self.advisor.hourly_rate(self.region, instance_type) * self.rate_multiplier
        if rate <= 0:
            return []
        delay = self._rng.expovariate(rate)
        if delay > self.horizon_s:
            return []
        at = now_s + delay
        events = [PlannedEvent(at, instance_id, EventKind.INTERRUPTION, notice_s=self.notice_s, source="advisor")]
        if self._rng.random() < self.rebalance_probability:
            lead = self._rng.uniform(300.0, 1800.0)
            events.insert(0, PlannedEvent(max(now_s, at - lead), instance_id, EventKind.REBALANCE, source="advisor"))
        return events
