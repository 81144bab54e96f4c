"""Server-side sessions: who is logged in, with which token, and their CSRF secret.

The browser holds only an opaque session id (HttpOnly, SameSite=Strict); the bearer
token stays on the server. Every state-changing request must echo the session's CSRF
token, which only pages served to that session contain.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from aiohttp import web

from faultplane.auth.principal import Principal

COOKIE = "faultplane_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
# A session idle this long is forgotten: a dashboard left open overnight logs in again.
IDLE_SECONDS = 12 * 3600.0
MAX_SESSIONS = 10_000  # a bound on memory, whoever keeps logging in


@dataclass
class Session:
    id: str
    principal: Principal
    token: str | None  # None in local mode: the API needs no credentials
    csrf: str
    last_seen: float = field(default_factory=time.monotonic)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The gRPC metadata that makes an API call this user's own."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf, presented or "")


SESSION = web.RequestKey("faultplane_session", Session)


class SessionStore:
    """Sessions in memory: a restarted server asks everyone to log in again."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self._idle = idle_seconds
        self._sessions: dict[str, Session] = {}

    def create(self, principal: Principal, token: str | None) -> Session:
        self._expire()
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[oldest.id]
        session = Session(secrets.token_urlsafe(32), principal, token, secrets.token_urlsafe(32))
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        now = time.monotonic()
        if session is None or now - session.last_seen > self._idle:
            self._sessions.pop(session_id, None)
            return None
        session.last_seen = now
        return session

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for stale in [s.id for s in self._sessions.values() if now - s.last_seen > self._idle]:
            del self._sessions[stale]
