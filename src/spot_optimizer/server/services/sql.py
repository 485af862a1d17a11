"""Dialect-aware INSERT ... ON CONFLICT helpers (SQLite and PostgreSQL both support them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def _insert(session: Session, model: Any) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise RuntimeError(f"unsupported database dialect {dialect!r}")


def insert_ignore(session: Session, model: Any, values: dict[str, Any]) -> bool:
    """Insert one row unless its key exists; True when inserted."""
    # RETURNING, not rowcount: drivers disagree on rowcount after ON CONFLICT DO NOTHING.
    key = next(iter(model.__table__.primary_key.columns))
    stmt = _insert(session, model).values(**values).on_conflict_do_nothing().returning(key)
    return session.execute(stmt).first() is not None


def upsert(session: Session, model: Any, values: dict[str, Any], keys: Sequence[str]) -> None:
    """Insert one row or update every non-key column of the existing one."""
    stmt = _insert(session, model).values(**values)
    update = {k: stmt.excluded[k] for k in values if k not in keys}
    session.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=update))
