"""The dashboard's stylesheet and script, read from the package once at start-up.

Only the files named in ``ASSETS`` are served (no directory is exposed, so no path can
reach anything else), with a content hash as ETag.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from aiohttp import web

from delivery_server.http.dashboard.console import RequestHandler

ASSETS = {
    "console.css": "text/css",
    "console.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}


def static_routes() -> list[web.RouteDef]:
    folder = resources.files("delivery_server.http.dashboard") / "static"
    routes = []
    for name, media in ASSETS.items():
        body = (folder / name).read_bytes()
        routes.append(web.get(f"/static/{name}", _asset(body, media)))
    return routes


def _asset(body: bytes, media: str) -> RequestHandler:
    etag = hashlib.sha256(body).hexdigest()[:32]

    async def serve(request: web.Request) -> web.StreamResponse:
        headers = {"ETag": f'"{etag}"', "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == f'"{etag}"':
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type=media, charset="utf-8", headers=headers)

    return serve
