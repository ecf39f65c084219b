"""A tiny HTTP server on 127.0.0.1 that answers every request the same scripted way.

For what moto cannot do: answer with a chosen AWS error, never answer (read timeout), or
drop the connection once the request has arrived. It counts the requests it received,
which is how tests prove that no SDK-level retry happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Literal

from aiohttp import web

Behaviour = Literal["reply", "hang", "close"]


class HttpStub:
    """Serve on a free loopback port inside the running event loop (``async with``)."""

    def __init__(
        self,
        behaviour: Behaviour = "reply",
        *,
        status: int = 200,
        body: bytes = b"{}",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.status = status
        self.body = body
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @classmethod
    def aws_error(cls, status: int, code: str, message: str = "stub error") -> HttpStub:
        """A stub answering like an AWS REST-JSON service (SES v2) with one error."""
        return cls(
            status=status,
            body=json.dumps({"message": message}).encode(),
            headers={"x-amzn-ErrorType": code},
        )

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> HttpStub:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        self.requests.append(head + await reader.readexactly(length))
        if self.behaviour == "close":
            return False
        if self.behaviour == "hang":
            await asyncio.Event().wait()  # until the client gives up or the stub closes
        lines = [f"HTTP/1.1 {self.status} Stub", f"Content-Length: {len(self.body)}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + self.body)
        await writer.drain()
        return True


@contextlib.asynccontextmanager
async def serving(app: web.Application, port: int = 0) -> AsyncIterator[int]:
    """Serve an aiohttp ``app`` on 127.0.0.1 (a free port when ``port`` is 0) inside the
    running event loop; yields the port it is bound to."""
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield bound
    finally:
        await runner.cleanup()
