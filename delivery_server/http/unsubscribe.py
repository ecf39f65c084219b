"""One-click unsubscribe (RFC 8058) on the API listener: ``GET|POST /unsubscribe/{token}``.

Jobs that opt in send ``List-Unsubscribe: <https://.../unsubscribe/TOKEN>`` and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. A mail client's one-click POST (or
the button of the page a GET shows) suppresses the email's address with the reason
``unsubscribe`` and answers 200 at once: RFC 8058 forbids asking for a second click on a
POST. The token is an HMAC-signed email id (``suppression.sign_unsubscribe``): no address
in the URL, nothing to guess. The pages name no address either, and tell the browser to
send no Referer (the token is a capability) and to run nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from delivery_server.errors import InvalidTokenError
from delivery_server.suppression import verify_unsubscribe

log = structlog.get_logger(__name__)

# An unsubscribe POST carries "List-Unsubscribe=One-Click" and nothing else worth reading.
MAX_BODY_BYTES = 4096
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}}
button{{font-size:1rem;padding:.6rem 1.2rem}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""
CONFIRM = (
    "<p>Stop receiving these emails?</p>"
    '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
    '<button type="submit">Unsubscribe</button></form>'
)

Unsubscribe = Callable[[int], Awaitable[bool]]
OutcomeFn = Callable[[str], None]


def unsubscribe_routes(
    secret: bytes, unsubscribe: Unsubscribe, on_outcome: OutcomeFn
) -> list[web.RouteDef]:
    """The two routes; ``unsubscribe(email_id)`` suppresses that email's address."""

    def email_id_of(request: web.Request) -> int | None:
        try:
            return verify_unsubscribe(request.match_info["token"], secret)
        except InvalidTokenError:
            on_outcome("unsubscribe_invalid")
            return None

    async def show(request: web.Request) -> web.Response:
        if email_id_of(request) is None:
            return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
        return _page("Unsubscribe", CONFIRM, 200)

    async def one_click(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _page("Request too large", "", 413)
        email_id = email_id_of(request)
        if email_id is None:
            return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
        if not await unsubscribe(email_id):
            # A signed token for an email purged since: nothing to suppress any more.
            on_outcome("unsubscribe_gone")
            return _page("Link expired", "<p>This unsubscribe link has expired.</p>", 404)
        # Not "unsubscribed": that outcome is SNS ending our topic subscription.
        on_outcome("unsubscribe_recorded")
        log.info("unsubscribed", email_id=email_id)
        return _page("Unsubscribed", "<p>You will not receive these emails again.</p>", 200)

    return [
        web.get("/unsubscribe/{token}", show),
        web.post("/unsubscribe/{token}", one_click),
    ]


def _page(title: str, body: str, status: int) -> web.Response:
    return web.Response(
        text=PAGE.format(title=title, body=body),
        status=status,
        content_type="text/html",
        headers=SECURITY_HEADERS,
    )
