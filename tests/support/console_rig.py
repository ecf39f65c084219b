"""A server with the operator console on MariaDB, and a browser-like HTTP client for it.

The server is the whole embedded one (``serve()``: publisher, consumers, the outbox as
sender) with the API listener on a free port; ``max_send_rate`` slows the sends so that a
job is still processing while a test watches it. Tokens are minted into the database as
``tokens create`` does.
"""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from delivery_server.api_tokens import TokenScope, mint_token
from delivery_server.models import NewEmail
from delivery_server.ports import Store
from delivery_server.settings import Settings, load_settings
from tests.integration.harness import RunningServer, customer, prepared_store

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def console_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "queue": "local",
        "sender": "outbox",
        "outbox_dir": tmp_path / "outbox",
        "http_port": 0,
        "api_port": 0,
        "poll_interval": 0.1,
        "retry_base_delay": 0.2,
        "concurrency": 4,
        "log_level": "warning",
    }
    values.update(overrides)
    return load_settings(**values)


def recipients(count: int, failing: int = 0) -> list[NewEmail]:
    """``count`` customers; the first ``failing`` lack a variable the template needs, so
    they fail at once (permanently, at rendering)."""
    emails = []
    for n in range(1, count + 1):
        email = customer(n)
        if n <= failing:
            email = NewEmail(email.to_address, {"name": f"Customer {n}"})
        emails.append(email)
    return emails


async def mint(store: Store, name: str, scope: TokenScope) -> str:
    secret, hashed = mint_token()
    await store.add_api_token(name, scope, hashed)
    return secret


def csrf_of(page: str) -> str:
    found = CSRF_FIELD.search(page)
    assert found is not None, "no CSRF field on the page"
    return html.unescape(found.group(1))


@dataclass
class Browser:
    """An HTTP client with a cookie jar, as a browser on the console would be."""

    base: str
    session: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return self.base + path

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.get(self.url(path), allow_redirects=False, **kwargs) as r:
            return r.status, await r.text(), r

    async def post(
        self, path: str, data: dict[str, str], **kwargs: Any
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.post(
            self.url(path), data=data, allow_redirects=False, **kwargs
        ) as r:
            return r.status, await r.text(), r

    async def login(self, token: str) -> tuple[int, str, aiohttp.ClientResponse]:
        _, page, _ = await self.get("/login")
        return await self.post("/login", {"token": token, "csrf": csrf_of(page)})

    async def csrf(self, path: str = "/") -> str:
        status, page, _ = await self.get(path)
        assert status == 200, (status, page[:500])
        return csrf_of(page)


@contextlib.asynccontextmanager
async def browser(port: int) -> AsyncIterator[Browser]:
    # unsafe=True: keep cookies from an IP-address host (127.0.0.1), as browsers do.
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        yield Browser(f"http://127.0.0.1:{port}", session)


@dataclass
class Console:
    server: RunningServer
    store: Store
    operate_token: str
    read_token: str

    @property
    def port(self) -> int:
        return self.server.api_port


@contextlib.asynccontextmanager
async def running_console(settings: Settings) -> AsyncIterator[Console]:
    async with prepared_store(settings) as store:
        operate = await mint(store, "ops-alice", TokenScope.OPERATE)
        read = await mint(store, "viewer-bob", TokenScope.READ)
        async with RunningServer(settings) as server:
            yield Console(server, store, operate, read)
