"""One aiohttp listener on ``host:port``: both the health listener and the API listener.

Port 0 asks the OS for a free port; ``port`` is the one actually bound (tests use it).
"""

from __future__ import annotations

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)


class Listener:
    """Serves ``app`` from ``start`` until ``stop``."""

    def __init__(self, app: web.Application, name: str) -> None:
        self._app = app
        self._name = name
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host=host, port=port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("http_listening", listener=self._name, host=host, port=self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
