"""The health and metrics listener (§8): liveness from heartbeats, readiness from the backends.

Only ``/metrics``, ``/healthz`` and ``/readyz`` are served; everything else is 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from delivery_server.heartbeats import Heartbeats
from delivery_server.http.listener import Listener
from delivery_server.metrics import Metrics

log = structlog.get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[object]]


class HttpServer:
    """The metrics and health endpoints on ``host:port``."""

    def __init__(
        self,
        metrics: Metrics,
        heartbeats: Heartbeats,
        checks: dict[str, ReadinessCheck],
        *,
        check_timeout: float = 5.0,
    ) -> None:
        self._metrics = metrics
        self._heartbeats = heartbeats
        self._checks = checks
        self._check_timeout = check_timeout
        self._listener = Listener(self._app(), "health")
        self.port: int | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/healthz", self._get_healthz)
        app.router.add_get("/readyz", self._get_readyz)
        return app

    async def start(self, host: str, port: int) -> None:
        await self._listener.start(host, port)
        self.port = self._listener.port

    async def stop(self) -> None:
        await self._listener.stop()

    async def _get_metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _get_healthz(self, _: web.Request) -> web.Response:
        stale = self._heartbeats.stale()
        if stale:
            return web.json_response({"status": "unhealthy", "stale": stale}, status=503)
        return web.json_response({"status": "ok"})

    async def _get_readyz(self, _: web.Request) -> web.Response:
        failed: list[str] = []
        for name, check in self._checks.items():
            try:
                await asyncio.wait_for(check(), self._check_timeout)
            except Exception as exc:  # any failure means "not ready": report which backend
                log.warning("readiness_check_failed", backend=name, error=type(exc).__name__)
                failed.append(name)
        if failed:
            return web.json_response({"status": "not ready", "failed": failed}, status=503)
        return web.json_response({"status": "ready"})
