"""Server settings: built by the CLI (or a test) and passed to `create_app`. Nothing is read at import."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

DEFAULT_DB_URL = "sqlite:///spot_optimizer.db"
MAX_BODY_BYTES = 1024 * 1024


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ServerSettings:
    db_url: str = DEFAULT_DB_URL
    # Pre-seeded tokens (stored hashed on start); more can be made with `spot-optimizer token create`.
    admin_token: str | None = None
    enrollment_token: str | None = None
    heartbeat_interval_s: float = 5.0
    offline_after_missed: int = 3  # an agent is OFFLINE after this many missed heartbeat intervals
    command_lease_s: float = 30.0  # a delivered command without a result is redelivered after this
    command_deadline_s: float = 600.0  # a command not finished by then is expired
    max_body_bytes: int = MAX_BODY_BYTES
    sweep_interval_s: float | None = None  # liveness/expiry sweep period; None = heartbeat interval, 0 = off
    upgrade_on_start: bool = True
    # Decision loop (server/decisions): runs every this many seconds and at once on a notice; 0 = no
    # background loop (tests call `run_decisions_once`).
    decision_interval_s: float = 10.0
    prices_refresh_s: float = 60.0  # the loop asks one agent per workload for prices this often
    inventory_refresh_s: float = 30.0  # ... and for the region's inventory this often
    leader_lease_s: float = 30.0  # the loop's leader lease (several processes on PostgreSQL)
    advisor_path: str | None = None  # Spot Advisor JSON feed; unknown types get the average bucket
    clock: Callable[[], datetime] = field(default=utcnow)

    @property
    def offline_after_s(self) -> float:
        return self.heartbeat_interval_s * self.offline_after_missed
