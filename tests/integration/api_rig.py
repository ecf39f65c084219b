"""A running server with its API listener on MariaDB, tokens of both scopes, and a client.

The server runs embedded (the in-process queue, the outbox) with ``DELIVERY_API_PORT=0``;
jobs the tests look at stay in ``draft`` or ``paused`` unless a test starts them, so that
nothing moves under their feet. Everything is asked through real HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pymysql

from delivery_server.api_tokens import TokenScope, mint_token
from delivery_server.models import Job, JobStatus
from delivery_server.ports import Store
from delivery_server.settings import load_settings
from tests.integration.harness import RunningServer, create_job, customer, prepared_store


@dataclass
class Answer:
    status: int
    body: Any  # JSON when the answer is JSON, else text
    headers: Any


@dataclass
class ApiRig:
    server: RunningServer
    store: Store
    client: aiohttp.ClientSession
    operate: str
    read: str

    database_url: str
    sources: dict[str, aiohttp.ClientSession] = field(default_factory=dict)

    async def sql(
        self, statement: str, *params: Any, session: str | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement on the test's MariaDB database (committed); its rows.
        ``session``: a statement run before it on the same connection (a SET)."""
        url = urlsplit(self.database_url)

        def run() -> list[tuple[Any, ...]]:
            conn = pymysql.connect(
                host=url.hostname, port=url.port or 3306, user="root", database=url.path[1:]
            )
            try:
                with conn.cursor() as cur:
                    if session is not None:
                        cur.execute(session)
                    cur.execute(statement, params)
                    rows = list(cur.fetchall())
                conn.commit()
                return rows
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.api_port}{path}"

    async def call(
        self,
        method: str,
        path: str,
        *,
        auth: str | None = "operate",
        source: str | None = None,
        **kwargs: Any,
    ) -> Answer:
        """``auth``: "operate", "read", None (no header) or a raw Authorization value;
        ``source``: another loopback address to call from (the failure limit is per
        client address)."""
        headers = dict(kwargs.pop("headers", {}))
        if auth == "operate":
            headers["Authorization"] = f"Bearer {self.operate}"
        elif auth == "read":
            headers["Authorization"] = f"Bearer {self.read}"
        elif auth is not None:
            headers["Authorization"] = auth
        client = self.client if source is None else self._client_from(source)
        async with client.request(method, self.url(path), headers=headers, **kwargs) as response:
            text = await response.text()
            body: Any = text
            if response.content_type == "application/json":
                body = await response.json()
            return Answer(response.status, body, response.headers)

    def _client_from(self, source: str) -> aiohttp.ClientSession:
        if source not in self.sources:
            connector = aiohttp.TCPConnector(local_addr=(source, 0))
            self.sources[source] = aiohttp.ClientSession(connector=connector)
        return self.sources[source]

    async def get(self, path: str, **kwargs: Any) -> Answer:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Answer:
        return await self.call("POST", path, **kwargs)

    async def job(self, emails: int = 3, *, status: JobStatus = JobStatus.DRAFT) -> Job:
        """A job of ``emails`` customers, left in ``status`` (draft, paused)."""
        job = await create_job(self.store, [customer(n) for n in range(emails)], start=False)
        if status is not JobStatus.DRAFT:
            job = await self.store.set_job_status(job.id, status)
        return job


async def new_token(store: Store, name: str, scope: TokenScope) -> str:
    secret, hashed = mint_token()
    await store.add_api_token(name, scope, hashed)
    return secret


@contextlib.asynccontextmanager
async def api_rig(database_url: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[ApiRig]:
    values: dict[str, Any] = {
        "database_url": database_url,
        "queue": "local",
        "sender": "outbox",
        "outbox_dir": tmp_path / "outbox",
        "http_port": 0,
        "api_port": 0,
        "poll_interval": 0.1,
        "shutdown_grace": 2.0,
        "log_level": "warning",
    }
    values.update(overrides)
    settings = load_settings(**values)
    async with prepared_store(settings) as store:
        operate = await new_token(store, "ops", TokenScope.OPERATE)
        read = await new_token(store, "viewer", TokenScope.READ)
        async with RunningServer(settings) as server, aiohttp.ClientSession() as client:
            rig = ApiRig(server, store, client, operate, read, database_url)
            try:
                yield rig
            finally:
                for session in rig.sources.values():
                    await session.close()
