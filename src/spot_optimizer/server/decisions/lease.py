"""The leader lease: one row per singleton job; only the process holding an unexpired lease runs it.

Taking or renewing is one guarded UPDATE (`... WHERE name = :n AND (holder = :me OR expires_at < :now)`),
so two processes on PostgreSQL can never both hold it; zero rows updated means someone else does. On
SQLite there is one server process by design, so it simply takes the lease (a restart does not wait for
the previous holder's lease to run out).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from spot_optimizer.server.models import LeaderRow
from spot_optimizer.server.services.sql import insert_ignore

logger = logging.getLogger(__name__)

DECISION_LOOP = "decision_loop"


def acquire(session: Session, name: str, holder: str, now: datetime, ttl_s: float) -> bool:
    """Take or renew the lease `name` for `holder` until now + ttl; True when `holder` holds it (commits)."""
    expires = now + timedelta(seconds=ttl_s)
    inserted = insert_ignore(
        session, LeaderRow, {"name": name, "holder": holder, "expires_at": expires, "acquired_at": now}
    )
    if inserted:
        session.commit()
        logger.info("leader lease %s taken by %s", name, holder)
        return True
    guard = LeaderRow.name == name
    if session.get_bind().dialect.name != "sqlite":
        guard = guard & or_(LeaderRow.holder == holder, LeaderRow.expires_at < now)
    result = session.execute(
        update(LeaderRow).where(guard).values(holder=holder, expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release(session: Session, name: str, holder: str, now: datetime) -> None:
    """Give the lease up at once (on shutdown), so another process need not wait for it to expire."""
    session.execute(
        update(LeaderRow)
        .where(LeaderRow.name == name, LeaderRow.holder == holder)
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
