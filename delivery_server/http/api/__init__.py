"""The versioned JSON API under ``/api/v1`` (DESIGN §8), on the API listener.

Routes are declared once, as ``endpoints.Endpoint`` rows (jobs, emails, upload, admin);
the same rows register the aiohttp routes and build ``/api/v1/openapi.json``. aiohttp.web
because the listener is aiohttp already (``/ses/events``, ``/unsubscribe``): one server,
one event loop, no second framework.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from delivery_server.http.api.admin import admin_endpoints
from delivery_server.http.api.auth import Authenticator, FailedAttempts, SessionLookup
from delivery_server.http.api.emails import email_endpoints
from delivery_server.http.api.endpoints import Call, Endpoint, EndpointRunner
from delivery_server.http.api.jobs import job_endpoints
from delivery_server.http.api.openapi import openapi_document
from delivery_server.http.api.rates import JobRates
from delivery_server.http.api.upload import create_job
from delivery_server.ports import Store
from delivery_server.renderer import Renderer

__all__ = ["FailedAttempts", "SessionLookup", "api_endpoints", "api_routes"]

OPENAPI_PATH = "/api/v1/openapi.json"


def api_endpoints(renderer: Renderer, unsubscribe_ready: bool) -> list[Endpoint]:
    """Every endpoint of ``/api/v1``, ``openapi.json`` last."""
    endpoints = [
        *job_endpoints(JobRates()),
        create_job(unsubscribe_ready),
        *email_endpoints(),
        *admin_endpoints(renderer),
    ]
    document: dict[str, Any] = {}

    async def openapi(call: Call) -> web.StreamResponse:
        return web.json_response(document)

    endpoints.append(Endpoint("GET", OPENAPI_PATH, openapi, "This document", None, errors=()))
    document.update(openapi_document(endpoints))
    return endpoints


def api_routes(
    store: Store,
    renderer: Renderer,
    *,
    unsubscribe_ready: bool,
    attempts: FailedAttempts | None = None,
    sessions: SessionLookup | None = None,
) -> list[web.RouteDef]:
    """The aiohttp routes of ``/api/v1``, each behind the bearer-token check (or the
    dashboard's session, when ``sessions`` is given)."""
    runner = EndpointRunner(store, Authenticator(store, attempts, sessions))
    return [runner.route(e) for e in api_endpoints(renderer, unsubscribe_ready)]
