"""What every dashboard page shares: who is looking, the CSRF check, and rendering.

``Console.page`` wraps a handler: no live session → the login page (a polled block gets
401, and the script sends the browser there); a POST whose ``csrf`` field is not the
session's → 403, before the handler runs. Pages are Jinja2 templates with autoescaping
on; every answer carries a CSP that allows this origin's script and style files only
(nothing inline) and ``Cache-Control: no-store`` (pages show addresses).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from delivery_server.api_tokens import TokenScope, hashes_match
from delivery_server.http.api.auth import CsrfRefused, FailedAttempts, Principal
from delivery_server.http.api.models import MAX_ID
from delivery_server.http.api.rates import JobRates
from delivery_server.http.dashboard.history import SendHistory
from delivery_server.http.dashboard.sessions import COOKIE, Session, SessionBook
from delivery_server.ports import Store

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HTML_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store"}
JOB_ID_PATTERN = "{job_id:[0-9]{1,19}}"


@dataclass
class View:
    """One authenticated request as a page handler sees it."""

    request: web.Request
    session: Session
    principal: Principal
    form: MultiDictProxy[str | bytes | bytearray | web.FileField] = field(
        default_factory=lambda: MultiDictProxy(MultiDict())
    )

    @property
    def can_operate(self) -> bool:
        return self.principal.may(TokenScope.OPERATE)

    def field(self, name: str) -> str:
        """A text field of the posted form ('' when absent or a file)."""
        value = self.form.get(name)
        return value if isinstance(value, str) else ""

    def job_id(self) -> int:
        """The path's job id (the route allows digits only); 404 beyond any id."""
        job_id = int(self.request.match_info["job_id"])
        if not 1 <= job_id <= MAX_ID:
            raise web.HTTPNotFound()
        return job_id


PageHandler = Callable[[View], Awaitable[web.StreamResponse]]
RequestHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


NOTHING = "\u2013"  # an en dash: no value


def _count(value: int | None) -> str:
    return NOTHING if value is None else f"{value:,}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return NOTHING
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _when(value: datetime | None) -> str:
    return NOTHING if value is None else f"{value:%Y-%m-%d %H:%M:%S} UTC"


def template_environment() -> jinja2.Environment:
    """The dashboard's templates, shipped inside the package (and so in the wheel)."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("delivery_server.http.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(count=_count, duration=_duration, when=_when)
    return environment


class Console:
    """The dashboard's state in one API process: sessions, rates, send history."""

    def __init__(
        self,
        store: Store,
        attempts: FailedAttempts,
        *,
        sessions: SessionBook | None = None,
        rates: JobRates | None = None,
        history: SendHistory | None = None,
    ) -> None:
        self.store = store
        self.attempts = attempts
        self.sessions = sessions or SessionBook()
        self.rates = rates or JobRates()
        self.history = history or SendHistory()
        self._templates = template_environment()

    async def viewer(self, request: web.Request) -> View | None:
        """The request's live session, its token still active; else None."""
        session = self.sessions.find(request.cookies.get(COOKIE))
        if session is None:
            return None
        token = await self.store.api_token_by_hash(session.token_hash)
        if (
            token is None
            or not token.active
            or not hashes_match(session.token_hash, token.token_hash)
        ):
            self.sessions.close(session.id)
            return None
        return View(request, session, Principal(session.name, session.scope, via="session"))

    async def api_session(self, request: web.Request) -> Principal | None:
        """The session as a way into ``/api/v1`` (``http.api.auth.SessionLookup``): a
        state-changing call must also send the session's CSRF token in ``X-CSRF-Token``
        (pages carry it in ``<meta name="csrf-token">``)."""
        view = await self.viewer(request)
        if view is None:
            return None
        presented = request.headers.get("X-CSRF-Token")
        if request.method not in SAFE_METHODS and not view.session.csrf_matches(presented):
            raise CsrfRefused(
                "a call with the dashboard's session cookie needs its CSRF token in X-CSRF-Token"
            )
        return view.principal

    def render(
        self, template: str, view: View | None = None, status: int = 200, **context: Any
    ) -> web.Response:
        """A page from its template (it shows, and so spends, the session's message)."""
        flash = view.session.take_flash() if view is not None else None
        return self._respond(template, view, status, flash, context)

    def render_block(self, template: str, view: View, **context: Any) -> web.Response:
        """A polled block: the part of a page that the script replaces."""
        return self._respond(template, view, 200, None, context)

    def _respond(
        self,
        template: str,
        view: View | None,
        status: int,
        flash: str | None,
        context: dict[str, Any],
    ) -> web.Response:
        html = self._templates.get_template(template).render(
            view=view, csrf=view.session.csrf if view is not None else "", flash=flash, **context
        )
        return web.Response(
            text=html, status=status, content_type="text/html", headers=HTML_HEADERS
        )

    def problem(self, view: View | None, status: int, title: str, message: str) -> web.Response:
        """An error page that says what was wrong."""
        return self.render("problem.html", view, status, title=title, message=message)

    def page(self, handler: PageHandler, *, block: bool = False) -> RequestHandler:
        """``handler`` behind the login (and, for a POST, the CSRF check)."""

        async def handle(request: web.Request) -> web.StreamResponse:
            view = await self.viewer(request)
            if view is None:
                if block:
                    return web.Response(status=401, text="log in again", headers=HTML_HEADERS)
                raise web.HTTPSeeOther("/login")
            if request.method == "POST":
                view.form = await request.post()
                if not view.session.csrf_matches(view.field("csrf") or None):
                    return self.problem(
                        view,
                        403,
                        "Form expired",
                        "This form's security token does not match your session "
                        "(it is from an earlier login, or from another site). "
                        "Nothing was changed; reload the page and try again.",
                    )
            return await handler(view)

        return handle
