"""What every answer of the API listener carries, and JSON errors under ``/api/``.

The headers are set as each response is prepared (streamed CSV and aiohttp's own 404 and
413 answers included): a Content-Security-Policy that allows no script at all (a page
that needs one names it by its own file, never inline), ``frame-ancestors 'none'``
against clickjacking, ``nosniff``, and no Referer. A handler that sets a stricter or
page-specific policy (``/unsubscribe``) keeps it, with ``frame-ancestors 'none'`` added.
"""

from __future__ import annotations

import json

from aiohttp import web
from aiohttp.typedefs import Handler

CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


async def secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` signal handler."""
    policy = response.headers.get("Content-Security-Policy")
    if policy is None:
        response.headers["Content-Security-Policy"] = CSP
    elif "frame-ancestors" not in policy:
        response.headers["Content-Security-Policy"] = f"{policy}; frame-ancestors 'none'"
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")


@web.middleware
async def api_json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors under ``/api/`` (no such route, body too large, wrong
    method) as JSON like the API's, with their status."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.Response(
            text=json.dumps({"error": exc.reason}),
            status=exc.status,
            content_type="application/json",
            headers={k: v for k, v in exc.headers.items() if k.lower() in ("allow",)},
        )
