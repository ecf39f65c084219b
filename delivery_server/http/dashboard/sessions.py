"""Dashboard sessions: a pasted API token becomes a server-side session behind a cookie.

The cookie carries a random session id and nothing else (HttpOnly, SameSite=Strict,
Secure when the request came over https). The session keeps the token's *hash*, so that
each request checks the token again: revoking a token ends its sessions at once.
Sessions live in this process's memory, bounded (the least recently used go first), with
an idle and an absolute lifetime: a restart logs everyone out, and several API tasks
behind one load balancer need sticky sessions (README, "Operator console").

Every session has its own CSRF token, put in every form and checked on every
state-changing request that comes with the cookie. The login form, which has no session
yet, is protected by a double-submit cookie instead (``LOGIN_COOKIE``).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from delivery_server.api_tokens import ApiToken, TokenScope
from delivery_server.http.api.auth import SESSION_COOKIE

COOKIE = SESSION_COOKIE
LOGIN_COOKIE = "ds_login"
IDLE_SECONDS = 2 * 3600.0
LIFETIME_SECONDS = 12 * 3600.0
MAX_SESSIONS = 10_000


@dataclass(slots=True)
class Session:
    """One logged-in browser."""

    id: str
    token_hash: str
    name: str  # the token's: what the audit trail records as "who"
    scope: TokenScope
    csrf: str
    created: float
    seen: float
    flash: str | None = None  # a message for the next page (outcomes of an action)

    def csrf_matches(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented, self.csrf)

    def take_flash(self) -> str | None:
        message, self.flash = self.flash, None
        return message


class SessionBook:
    """The live sessions of this process."""

    def __init__(
        self,
        idle: float = IDLE_SECONDS,
        lifetime: float = LIFETIME_SECONDS,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._idle = idle
        self._lifetime = lifetime
        self._max = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, token: ApiToken) -> Session:
        """A new session for a verified token."""
        now = self._clock()
        session = Session(
            id=secrets.token_urlsafe(32),
            token_hash=token.token_hash,
            name=token.name,
            scope=token.scope,
            csrf=secrets.token_urlsafe(32),
            created=now,
            seen=now,
        )
        self._sessions[session.id] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return session

    def find(self, session_id: str | None) -> Session | None:
        """The live session of that id (an expired one is ended on the way)."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.seen > self._idle or now - session.created > self._lifetime:
            self.close(session_id)
            return None
        session.seen = now
        self._sessions.move_to_end(session_id)
        return session

    def close(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)


def is_https(request: web.Request) -> bool:
    """Whether the browser reached us over https (directly, or through a TLS-terminating
    proxy such as an ALB that says so in ``X-Forwarded-Proto``). Only used to make the
    cookie stricter, so a forged header can do no harm."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def set_cookie(
    response: web.StreamResponse, request: web.Request, name: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=is_https(request),
    )


def clear_cookie(response: web.StreamResponse, request: web.Request, name: str) -> None:
    set_cookie(response, request, name, "", 0)


def login_nonce(request: web.Request) -> str:
    """The login form's CSRF value: the browser's ``LOGIN_COOKIE`` or a new one."""
    present = request.cookies.get(LOGIN_COOKIE, "")
    return present if 20 <= len(present) <= 100 else secrets.token_urlsafe(32)


def login_nonce_matches(request: web.Request, presented: str | None) -> bool:
    cookie = request.cookies.get(LOGIN_COOKIE)
    return bool(cookie and presented) and hmac.compare_digest(str(cookie), str(presented))
