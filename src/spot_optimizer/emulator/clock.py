"""The emulated region's clock: wall time runs at the speed of the world, scaled by a factor.

Everything an agent sees carries *wall-clock* timestamps (the agent reads its own real clock), but
the world moves `speed` times faster: a two-minute notice lasts 120 / speed real seconds, and one
real second of replay covers `speed` seconds of the price trace. The mapping is linear and anchored
at start: `trace_time(wall) = trace_start + (wall - wall_start) * speed`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class EmulatedClock:
    def __init__(
        self,
        speed: float = 1.0,
        trace_start: datetime | None = None,
        wall_start: float | None = None,
        time_fn: Callable[[], float] = time.time,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self._time = time_fn
        self._speed = float(speed)
        self.wall_start = self._time() if wall_start is None else wall_start
        self.trace_start = trace_start or datetime.fromtimestamp(self.wall_start, UTC)
        self._lock = threading.Lock()
        # emulated seconds accumulated before the last speed change, and the wall time of that change
        self._base_emulated = 0.0
        self._base_wall = self.wall_start

    @property
    def speed(self) -> float:
        return self._speed

    def set_speed(self, speed: float) -> None:
        """Change the factor from now on; emulated time stays continuous."""
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        with self._lock:
            now = self._time()
            self._base_emulated += (now - self._base_wall) * self._speed
            self._base_wall = now
            self._speed = float(speed)

    def wall(self) -> float:
        """Real epoch seconds (what the agents' clocks say)."""
        return self._time()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._time(), UTC)

    def elapsed(self, wall: float | None = None) -> float:
        """Emulated seconds since start at wall time `wall` (default: now)."""
        wall = self._time() if wall is None else wall
        with self._lock:
            return self._base_emulated + (wall - self._base_wall) * self._speed

    def wall_at(self, emulated_s: float) -> float:
        """The wall time at which `emulated_s` emulated seconds since start are reached."""
        with self._lock:
            return self._base_wall + (emulated_s - self._base_emulated) / self._speed

    def real_seconds(self, emulated_s: float) -> float:
        return emulated_s / self._speed

    def after(self, emulated_s: float) -> datetime:
        """Wall-clock datetime `emulated_s` emulated seconds from now (e.g. a notice's action time)."""
        return datetime.fromtimestamp(self._time() + emulated_s / self._speed, UTC)

    def trace_time(self, wall: float | None = None) -> datetime:
        return self.trace_start + timedelta(seconds=self.elapsed(wall))

    def wall_of_trace(self, moment: datetime) -> float:
        return self.wall_at((moment - self.trace_start).total_seconds())

    def sleep(self, emulated_s: float) -> None:
        time.sleep(max(0.0, emulated_s / self._speed))
