"""The operator console: a server-rendered dashboard at ``/`` on the API listener.

Pages are Jinja2 templates (autoescaped) shipped in the package; one small script,
``static/console.js``, refreshes the polled blocks (progress, counts, chart) in place and
is all the enhancement there is: without it every page still works, reloaded by hand.
No CDN, no build step. Who may look is a session opened by pasting an API token
(``sessions``); what they may do is the token's scope. Nothing but ``/login`` and the two
static files answers without a session.

``add_dashboard`` registers the routes on the listener's application, and the send
history's sampler on its start-up and clean-up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from delivery_server.http.api.auth import FailedAttempts
from delivery_server.http.dashboard.actions import action_routes
from delivery_server.http.dashboard.admin import admin_routes
from delivery_server.http.dashboard.console import Console
from delivery_server.http.dashboard.history import sample_processing_jobs
from delivery_server.http.dashboard.jobs import job_routes
from delivery_server.http.dashboard.login import login_routes
from delivery_server.http.dashboard.static import static_routes
from delivery_server.ports import Store

__all__ = ["Console", "add_dashboard"]


def add_dashboard(app: web.Application, store: Store, attempts: FailedAttempts) -> Console:
    """Serve the dashboard from ``app``; ``attempts`` is the API's failed-login limit."""
    console = Console(store, attempts)
    app.add_routes(
        [
            *login_routes(console),
            *static_routes(),
            *job_routes(console),
            *action_routes(console),
            *admin_routes(console),
        ]
    )

    async def sampling(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(sample_processing_jobs(store, console.history))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(sampling)
    return console
