"""Dashboard sign-in: a signed session cookie made from the admin token, and per-session CSRF tokens.

The cookie never holds the token. It holds the id of the admin token row used to sign in, an expiry and
a random nonce, signed with HMAC-SHA256 under a key derived from a server secret and that token's stored
hash; a revoked token therefore ends its sessions. The server secret comes from
`SPOT_OPTIMIZER_SESSION_SECRET` (set it when several server processes share the sessions); without it a
random secret is made per process and sessions end when the server restarts.

The CSRF token is HMAC(key, "csrf:" + nonce): tied to the session, nothing stored. Every POST must carry
it as the form field `csrf_token` or the header `X-CSRF-Token`. The sign-in form uses a double-submit
cookie instead, as there is no session yet.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from spot_optimizer.server.models import TokenRow
from spot_optimizer.server.services.security import secret_matches
from spot_optimizer.server.services.tokens import TokenKind

SESSION_COOKIE = "so_session"
LOGIN_CSRF_COOKIE = "so_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_LIFETIME = timedelta(hours=12)
SECRET_ENV = "SPOT_OPTIMIZER_SESSION_SECRET"


class NotSignedIn(Exception):
    """Raised by `require_session`; the web router turns it into a redirect to /login."""


class CsrfRejected(Exception):
    """A POST without a valid CSRF token; answered 403."""


@dataclass(frozen=True)
class WebSession:
    token_id: int
    nonce: str
    expires: datetime
    csrf: str


def _server_secret(request: Request) -> bytes:
    state = request.app.state
    secret: bytes | None = getattr(state, "web_session_secret", None)
    if secret is None:
        configured = os.environ.get(SECRET_ENV)
        secret = configured.encode() if configured else secrets.token_bytes(32)
        state.web_session_secret = secret
    return secret


def _key(request: Request, token_hash: str) -> bytes:
    return hmac.new(_server_secret(request), b"dashboard-session:" + token_hash.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def _csrf(key: bytes, nonce: str) -> str:
    return _sign(key, "csrf:" + nonce)


def find_admin_token(session: Session, presented: str) -> TokenRow | None:
    """The unrevoked admin token row matching `presented`; every candidate is compared (constant time)."""
    rows = session.scalars(
        select(TokenRow).where(TokenRow.kind == TokenKind.ADMIN.value, TokenRow.revoked_at.is_(None))
    ).all()
    found: TokenRow | None = None
    for row in rows:
        if secret_matches(presented, row.token_hash) and found is None:
            found = row
    return found


def make_cookie(request: Request, token: TokenRow, now: datetime) -> str:
    expires = now + SESSION_LIFETIME
    payload = _b64(
        json.dumps({"t": token.id, "e": int(expires.timestamp()), "n": secrets.token_urlsafe(16)}).encode()
    )
    return payload + "." + _sign(_key(request, token.token_hash), payload)


def read_session(request: Request, session: Session, now: datetime) -> WebSession | None:
    """The signed-in session of this request, or None (missing, forged, expired or revoked)."""
    cookie = request.cookies.get(SESSION_COOKIE, "")
    payload, _, signature = cookie.partition(".")
    if not payload or not signature:
        return None
    try:
        data = json.loads(_unb64(payload))
        token_id, expires_ts, nonce = int(data["t"]), int(data["e"]), str(data["n"])
    except (ValueError, KeyError, TypeError):
        return None
    token = session.get(TokenRow, token_id)
    if token is None or token.revoked_at is not None or token.kind != TokenKind.ADMIN.value:
        return None
    key = _key(request, token.token_hash)
    if not hmac.compare_digest(_sign(key, payload), signature):
        return None
    expires = datetime.fromtimestamp(expires_ts, tz=now.tzinfo)
    if expires <= now:
        return None
    return WebSession(token_id=token_id, nonce=nonce, expires=expires, csrf=_csrf(key, nonce))


def require_session(request: Request, session: Session, now: datetime) -> WebSession:
    web = read_session(request, session, now)
    if web is None:
        raise NotSignedIn()
    return web


def check_csrf(request: Request, web: WebSession, form_value: str | None) -> None:
    presented = form_value or request.headers.get(CSRF_HEADER) or ""
    if not presented or not hmac.compare_digest(presented.encode(), web.csrf.encode()):
        raise CsrfRejected("missing or wrong CSRF token: reload the page and try again")


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def check_login_csrf(request: Request, form_value: str | None) -> None:
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not form_value or not hmac.compare_digest(cookie.encode(), form_value.encode()):
        raise CsrfRejected("missing or wrong CSRF token on the sign-in form: reload the page and try again")


def cookie_flags(request: Request) -> dict[str, object]:
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/",
    }

