"""Faults the shim injects (capacity errors per pool, throttling, slowness) and the log of every call."""

from __future__ import annotations

import itertools
import random
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

INSUFFICIENT_CAPACITY = "InsufficientInstanceCapacity"
THROTTLED = "RequestLimitExceeded"

# The HTTP status AWS answers with for the codes we inject (botocore's retry logic depends on it).
DEFAULT_STATUS = {INSUFFICIENT_CAPACITY: 500, THROTTLED: 503, "ThrottlingException": 400}


@dataclass
class Fault:
    """One rule. It applies to a call when every given condition matches.

    `error_code` None with `delay_s` > 0 is a pure slowdown. `pools` lists (instance type, AZ) pairs,
    either may be "*"; it applies to RunInstances only. `market` narrows to "spot" or "on-demand".
    `start_s`/`end_s` are emulated seconds since the region started (a schedule); `count` limits how
    many calls it hits (None = unlimited); `probability` < 1 hits at random (seeded).
    """

    error_code: str | None = None
    actions: list[str] = field(default_factory=list)  # e.g. ["RunInstances"]; empty = every action
    pools: list[tuple[str, str]] = field(default_factory=list)
    market: str | None = None
    delay_s: float = 0.0
    http_status: int | None = None
    message: str | None = None
    count: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    probability: float = 1.0
    fault_id: int = 0
    hits: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k not in ("fault_id", "hits")}
        if "pools" in known:
            known["pools"] = [_pool(p) for p in known["pools"]]
        if isinstance(known.get("actions"), str):
            known["actions"] = [known["actions"]]
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pools"] = [{"instance_type": t, "availability_zone": az} for t, az in self.pools]
        return data

    def status(self) -> int:
        if self.http_status:
            return self.http_status
        return DEFAULT_STATUS.get(self.error_code or "", 400)

    def error_message(self) -> str:
        if self.message:
            return self.message
        if self.error_code == INSUFFICIENT_CAPACITY:
            return "We currently do not have sufficient capacity in the Availability Zone you requested."
        if self.error_code == THROTTLED:
            return "Request limit exceeded."
        return f"injected fault {self.error_code}"


def _pool(value: Any) -> tuple[str, str]:
    if isinstance(value, dict):
        return (value.get("instance_type", "*"), value.get("availability_zone") or value.get("az") or "*")
    if isinstance(value, str):
        itype, _, az = value.partition("/")
        return (itype or "*", az or "*")
    itype, az = value
    return (str(itype), str(az))


@dataclass(frozen=True)
class CallContext:
    """What the shim knows about a call when deciding on faults."""

    service: str
    action: str
    instance_type: str | None = None
    availability_zone: str | None = None
    market: str | None = None  # "spot" | "on-demand" for RunInstances


class FaultInjector:
    def __init__(self, seed: int = 0) -> None:
        self._faults: dict[int, Fault] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def add(self, fault: Fault) -> int:
        with self._lock:
            fault.fault_id = next(self._ids)
            self._faults[fault.fault_id] = fault
            return fault.fault_id

    def insufficient_capacity(self, instance_type: str, az: str, **kwargs: Any) -> int:
        return self.add(Fault(INSUFFICIENT_CAPACITY, actions=["RunInstances"], pools=[(instance_type, az)], **kwargs))

    def throttle(self, actions: list[str] | None = None, **kwargs: Any) -> int:
        return self.add(Fault(THROTTLED, actions=list(actions or []), **kwargs))

    def slow(self, delay_s: float, actions: list[str] | None = None, **kwargs: Any) -> int:
        return self.add(Fault(None, actions=list(actions or []), delay_s=delay_s, **kwargs))

    def remove(self, fault_id: int) -> bool:
        with self._lock:
            return self._faults.pop(fault_id, None) is not None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[Fault]:
        with self._lock:
            return list(self._faults.values())

    def match(self, call: CallContext, elapsed_s: float) -> tuple[float, Fault | None]:
        """(delay to apply, error fault to answer with or None); consumes counts of the faults hit."""
        delay, error = 0.0, None
        with self._lock:
            for fault in list(self._faults.values()):
                if not self._applies(fault, call, elapsed_s):
                    continue
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    continue
                if fault.error_code and error is not None:
                    continue  # one error per call; a later rule waits for the next call
                fault.hits += 1
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        del self._faults[fault.fault_id]
                delay += fault.delay_s
                if fault.error_code:
                    error = fault
        return delay, error

    @staticmethod
    def _applies(fault: Fault, call: CallContext, elapsed_s: float) -> bool:
        if fault.actions and call.action not in fault.actions:
            return False
        if fault.start_s is not None and elapsed_s < fault.start_s:
            return False
        if fault.end_s is not None and elapsed_s >= fault.end_s:
            return False
        if fault.market and call.market != fault.market:
            return False
        if fault.pools:
            if call.action != "RunInstances":
                return False
            return any(
                (t == "*" or t == call.instance_type) and (az == "*" or az == call.availability_zone)
                for t, az in fault.pools
            )
        return True


@dataclass
class Call:
    """One AWS call that reached the shim."""

    seq: int
    wall: float  # epoch seconds when the request arrived (before any injected delay)
    emulated_s: float  # emulated seconds since the region started
    service: str
    action: str
    status: int
    error_code: str | None
    duration_ms: float
    params: dict[str, str]
    access_key: str | None = None

    @property
    def iam_action(self) -> str:
        return f"{self.service}:{self.action}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["iam_action"] = self.iam_action
        return data


class CallLog:
    def __init__(self, maxlen: int = 100_000) -> None:
        self._calls: deque[Call] = deque(maxlen=maxlen)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def record(self, **kwargs: Any) -> Call:
        with self._lock:
            call = Call(seq=next(self._seq), **kwargs)
            self._calls.append(call)
            return call

    def list(self, action: str | None = None, since: float | None = None, after_seq: int = 0) -> list[Call]:
        with self._lock:
            calls = list(self._calls)
        return [
            c
            for c in calls
            if c.seq > after_seq and (action is None or c.action == action) and (since is None or c.wall >= since)
        ]

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()
