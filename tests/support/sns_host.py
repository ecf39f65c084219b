"""A stand-in for ``sns.<region>.amazonaws.com`` on 127.0.0.1, for tests of ``POST /ses/events``.

It serves one signing certificate and answers ``ConfirmSubscription`` GETs, and records what
it was asked. ``DELIVERY_SNS_CERT_ORIGIN`` (the test-only setting) points a server at it.
It speaks plain HTTP unless given a TLS context: the server's own HTTP client trusts only
the system's certificate authorities, so a throwaway CA (``tests.support.tls``) can serve
the verifier a test builds itself, not one ``serve()`` builds.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.sns_messages import sign
from tests.support.tls import SigningIdentity

CERT_PATH = "/SimpleNotificationService-0123456789abcdef.pem"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class SnsCertHost:
    """What the SNS host was asked: certificate fetches and subscription confirmations."""

    identity: SigningIdentity
    scheme: str = "http"
    port: int = 0
    requests: int = 0
    cert_gets: int = 0
    confirmations: list[dict[str, str]] = field(default_factory=list)

    @property
    def origin(self) -> str:
        """``scheme://host:port``: the value of ``DELIVERY_SNS_CERT_ORIGIN``."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def cert_url(self) -> str:
        return f"{self.origin}{CERT_PATH}"

    @property
    def subscribe_base(self) -> str:
        return f"{self.origin}/"

    def signed(self, document: dict[str, str], version: str = "2") -> dict[str, str]:
        """``document`` signed with the key of the certificate this host serves."""
        return sign(document, self.identity.key, version)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._count])
        app.router.add_get(CERT_PATH, self._certificate)
        app.router.add_get("/", self._confirm)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests += 1
        return await handler(request)

    async def _certificate(self, _: web.Request) -> web.Response:
        self.cert_gets += 1
        return web.Response(
            body=self.identity.certificate_pem, content_type="application/x-pem-file"
        )

    async def _confirm(self, request: web.Request) -> web.Response:
        self.confirmations.append(dict(request.query))
        return web.Response(text="<ConfirmSubscriptionResponse/>", content_type="text/xml")


@contextlib.asynccontextmanager
async def sns_cert_host(
    identity: SigningIdentity, tls: ssl.SSLContext | None = None
) -> AsyncIterator[SnsCertHost]:
    """An ``SnsCertHost`` serving on a free port of 127.0.0.1 until the block ends."""
    host = SnsCertHost(identity, scheme="https" if tls is not None else "http")
    runner = web.AppRunner(host.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    host.port = int(runner.addresses[0][1])
    try:
        yield host
    finally:
        await runner.cleanup()
