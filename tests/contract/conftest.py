"""The store suites' fixtures: one database per test, on MariaDB and on SQLite, upgraded
to the head, with the store (and a second one: another task of the same service) and a
raw engine on it. A module that runs the suites on another schema (the mapped legacy
tables) overrides ``database_url``/``store``/``other_store`` with its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from delivery_server.adapters.store_sql import SqlStore, upgrade_schema
from delivery_server.adapters.store_sql.engine import create_engine

STORE_BACKENDS = ["mariadb_url", "sqlite_url"]


@pytest.fixture(params=STORE_BACKENDS)
async def database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(request.param)
    await upgrade_schema(url)
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.connect(database_url, pool_size=5)
    yield opened
    await opened.close()


@pytest.fixture
async def other_store(database_url: str) -> AsyncIterator[SqlStore]:
    """A second pool on the same database: another task of the same service."""
    opened = await SqlStore.connect(database_url, pool_size=5)
    yield opened
    await opened.close()


@pytest.fixture
async def raw(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Direct SQL, for what the port does not show (leases) or cannot write (bad rows)."""
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()
