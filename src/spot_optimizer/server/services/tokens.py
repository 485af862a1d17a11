"""Admin and enrollment tokens."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from spot_optimizer.server.models import TokenRow
from spot_optimizer.server.services.security import hash_secret, new_secret, secret_matches


class TokenKind(StrEnum):
    ADMIN = "admin"
    ENROLLMENT = "enrollment"


def create_token(session: Session, kind: TokenKind, now: datetime, note: str | None = None) -> str:
    """Make a new token; returns the plain text, which is never stored or shown again."""
    plain = new_secret()
    session.add(TokenRow(kind=kind.value, token_hash=hash_secret(plain), created_at=now, note=note))
    session.commit()
    return plain


def token_id(session: Session, plain: str) -> int | None:
    return session.scalar(select(TokenRow.id).where(TokenRow.token_hash == hash_secret(plain)))


def revoke_token(session: Session, token_id: int, now: datetime) -> bool:
    """Revoke a token for good (it stops working at once). False when no such token exists."""
    row = session.get(TokenRow, token_id)
    if row is None:
        return False
    if row.revoked_at is None:
        row.revoked_at = now
        session.commit()
    return True


def seed_token(session: Session, kind: TokenKind, plain: str, now: datetime) -> None:
    """Store an operator-chosen token (from the command line or environment) unless already known."""
    digest = hash_secret(plain)
    if session.scalar(select(TokenRow.id).where(TokenRow.token_hash == digest)) is None:
        session.add(TokenRow(kind=kind.value, token_hash=digest, created_at=now, note="seeded"))
        session.commit()


def token_is_valid(session: Session, kind: TokenKind, presented: str) -> bool:
    hashes = session.scalars(
        select(TokenRow.token_hash).where(TokenRow.kind == kind.value, TokenRow.revoked_at.is_(None))
    ).all()
    # Compare against every candidate so the time taken does not depend on which one matches.
    found = False
    for stored in hashes:
        found |= secret_matches(presented, stored)
    return found
