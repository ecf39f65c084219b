"""Who is calling: ``Authorization: Bearer <token>``, checked against the stored hashes.

* 401 without a token, with a malformed, unknown or revoked one (one answer for all, so
  that it tells a guesser nothing);
* 429 once a client address has failed ``max_failures`` times within ``window`` seconds:
  its attempts are refused without a database read until the window has passed;
* ``Principal.via`` says how the caller proved itself. A dashboard's session cookie is a
  second way in: it yields a principal with ``via="session"``, and the endpoint layer then
  asks for the CSRF token on every state-changing request (see ``endpoints``).

``last_used_at`` is written at most once a minute per token, not on every request.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import structlog
from aiohttp import web

from delivery_server.api_tokens import TokenScope, hashes_match, looks_like_token, token_hash
from delivery_server.models import utcnow
from delivery_server.ports import ConsoleStore

log = structlog.get_logger(__name__)

TOUCH_EVERY = timedelta(minutes=1)
MAX_FAILURES = 10
FAILURE_WINDOW = 60.0
MAX_TRACKED_CLIENTS = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the token's name is what the audit trail records."""

    name: str
    scope: TokenScope
    via: Literal["bearer", "session"] = "bearer"

    def may(self, scope: TokenScope) -> bool:
        return self.scope is TokenScope.OPERATE or scope is TokenScope.READ


class Unauthenticated(Exception):
    """No valid credentials (answered 401)."""


class CsrfRefused(Exception):
    """A session's state-changing request without the session's CSRF token (403)."""


# The cookie naming the dashboard's session: the API takes it too (and its OpenAPI
# document describes it), so it is named here, where the dashboard reads it from.
SESSION_COOKIE = "ds_session"
# The dashboard's session behind the request's cookie, as a principal (None: no live
# session); raises ``CsrfRefused`` for an unsafe method without ``X-CSRF-Token``.
SessionLookup = Callable[[web.Request], Awaitable[Principal | None]]


class TooManyFailures(Exception):
    """This client failed too often lately (answered 429)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many failed authentication attempts")
        self.retry_after = retry_after


class FailedAttempts:
    """Failed authentications per client address in a sliding window (bounded memory:
    the least recently failing clients are forgotten first)."""

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window: float = FAILURE_WINDOW,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_failures
        self._window = window
        self._max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def blocked_for(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: now)."""
        times = self._failures.get(client)
        if times is None:
            return 0.0
        now = self._clock()
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            del self._failures[client]
            return 0.0
        if len(times) < self._max:
            return 0.0
        return times[0] + self._window - now

    def failed(self, client: str) -> None:
        times = self._failures.pop(client, None) or deque(maxlen=self._max)
        times.append(self._clock())
        self._failures[client] = times  # now the most recent
        while len(self._failures) > self._max_clients:
            self._failures.popitem(last=False)


def client_address(request: web.Request) -> str:
    """The peer's address as the listener saw it (a proxy's, behind one)."""
    return request.remote or "unknown"


class Authenticator:
    """Turns a request into a ``Principal`` or refuses it."""

    def __init__(
        self,
        store: ConsoleStore,
        attempts: FailedAttempts | None = None,
        sessions: SessionLookup | None = None,
    ) -> None:
        self._store = store
        self._attempts = attempts or FailedAttempts()
        self._sessions = sessions

    async def principal(self, request: web.Request) -> Principal:
        """The caller, or ``Unauthenticated`` / ``TooManyFailures``."""
        client = client_address(request)
        wait = self._attempts.blocked_for(client)
        if wait > 0:
            raise TooManyFailures(wait)
        header = request.headers.get("Authorization")
        if header is None:
            session = await self._sessions(request) if self._sessions is not None else None
            if session is not None:
                return session
            raise Unauthenticated("missing Authorization: Bearer token")
        principal = await self._bearer(header)
        if principal is None:
            self._attempts.failed(client)
            log.info("api_auth_failed")  # no client address: it is personal data too
            raise Unauthenticated("invalid or revoked token")
        return principal

    async def _bearer(self, header: str) -> Principal | None:
        scheme, _, secret = header.strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not looks_like_token(secret):
            return None
        presented = token_hash(secret)
        token = await self._store.api_token_by_hash(presented)
        if token is None or not hashes_match(presented, token.token_hash) or not token.active:
            return None
        now = utcnow()
        if token.last_used_at is None or now - token.last_used_at >= TOUCH_EVERY:
            await self._store.touch_api_token(token.id, now)
        return Principal(name=token.name, scope=token.scope)
