"""Logging in with an API token, and out.

The pasted token is checked as the API checks a bearer token (its hash looked up, then
compared in constant time; revoked tokens refused), and failures count towards the same
per-client limit as the API's (one ``FailedAttempts`` for the whole listener), so the
login form is no faster way to guess. A login opens a new session (never reusing one
the browser brought along) and is audited as ``console.login``.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from delivery_server.api_tokens import ApiToken, AuditEntry, hashes_match, looks_like_token
from delivery_server.api_tokens import token_hash as hash_of
from delivery_server.http.api.auth import client_address
from delivery_server.http.dashboard.console import Console, View
from delivery_server.http.dashboard.sessions import (
    COOKIE,
    LIFETIME_SECONDS,
    LOGIN_COOKIE,
    clear_cookie,
    login_nonce,
    login_nonce_matches,
    set_cookie,
)
from delivery_server.models import utcnow

log = structlog.get_logger(__name__)

LOGIN_FORM_SECONDS = 3600


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


class Login:
    def __init__(self, console: Console) -> None:
        self._console = console

    def _form(
        self, request: web.Request, status: int = 200, error: str | None = None
    ) -> web.Response:
        nonce = login_nonce(request)
        response = self._console.render("login.html", None, status, nonce=nonce, error=error)
        set_cookie(response, request, LOGIN_COOKIE, nonce, LOGIN_FORM_SECONDS)
        return response

    async def show(self, request: web.Request) -> web.StreamResponse:
        if await self._console.viewer(request) is not None:
            return see_other("/")
        return self._form(request)

    async def submit(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        nonce, secret = form.get("csrf"), form.get("token")
        if not isinstance(nonce, str) or not login_nonce_matches(request, nonce):
            return self._form(
                request,
                403,
                "The login form had expired or came from another site. Nothing was sent; "
                "paste the token again.",
            )
        client = client_address(request)
        wait = self._console.attempts.blocked_for(client)
        if wait > 0:
            response = self._form(
                request,
                429,
                f"Too many failed attempts from your address: wait {int(wait) + 1} s.",
            )
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        token = await self._verified(secret.strip() if isinstance(secret, str) else "")
        if token is None:
            self._console.attempts.failed(client)
            log.info("console_login_failed")  # nothing about the client: personal data
            return self._form(
                request, 401, "That token is not valid: unknown, mistyped or revoked."
            )
        return await self._open_session(request, token, client)

    async def _verified(self, secret: str) -> ApiToken | None:
        if not looks_like_token(secret):
            return None
        presented = hash_of(secret)
        token = await self._console.store.api_token_by_hash(presented)
        if token is None or not hashes_match(presented, token.token_hash) or not token.active:
            return None
        return token

    async def _open_session(
        self, request: web.Request, token: ApiToken, client: str
    ) -> web.StreamResponse:
        console = self._console
        console.sessions.close(request.cookies.get(COOKIE, ""))
        session = console.sessions.open(token)
        await console.store.touch_api_token(token.id, utcnow())
        try:
            await console.store.record_audit(
                AuditEntry(actor=token.name, action="console.login", outcome="ok", client=client)
            )
        except Exception as exc:  # the login worked; the trail's outage is logged
            log.error("audit_write_failed", action="console.login", error=type(exc).__name__)
        response = see_other("/")
        set_cookie(response, request, COOKIE, session.id, int(LIFETIME_SECONDS))
        clear_cookie(response, request, LOGIN_COOKIE)
        return response

    async def logout(self, view: View) -> web.StreamResponse:
        self._console.sessions.close(view.session.id)
        response = see_other("/login")
        clear_cookie(response, view.request, COOKIE)
        return response


def login_routes(console: Console) -> list[web.RouteDef]:
    login = Login(console)
    return [
        web.get("/login", login.show),
        web.post("/login", login.submit),
        web.post("/logout", console.page(login.logout)),
    ]
