"""Secrets are random, shown once, stored as sha256 and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def secret_matches(presented: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(presented), stored_hash)
