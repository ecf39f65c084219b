"""Schema migrations with Alembic, run programmatically (no alembic.ini at runtime)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.database import Database
from delivery_server.adapters.store_sql.engine import create_engine
from delivery_server.errors import RetryableError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Our own version table: the database may also hold an upstream system's Alembic history.
VERSION_TABLE = "delivery_schema_version"
# Several tasks starting at once must not run the same migration twice.
MYSQL_LOCK_NAME = "delivery_server.schema_upgrade"
MYSQL_LOCK_TIMEOUT_SECONDS = 300


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic configuration for our script directory (``connection`` for env.py)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = VERSION_TABLE
    return config


async def upgrade_schema(database_url: str) -> None:
    """Create the tables or bring them to the latest revision; a no-op when current."""
    database = Database(create_engine(database_url, pool_size=1))
    try:
        await database.run(_upgrade)
    finally:
        await database.close()


async def _upgrade(conn: AsyncConnection) -> None:
    if conn.dialect.name == "mysql":
        locked = await conn.scalar(
            sa.text("SELECT GET_LOCK(:name, :timeout)"),
            {"name": MYSQL_LOCK_NAME, "timeout": MYSQL_LOCK_TIMEOUT_SECONDS},
        )
        if locked != 1:
            raise RetryableError("another schema upgrade is still running")
        try:
            await conn.run_sync(_run_alembic)
        finally:
            await conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": MYSQL_LOCK_NAME})
    else:  # SQLite: the write transaction (BEGIN IMMEDIATE) already excludes others
        await conn.run_sync(_run_alembic)


def _run_alembic(connection: sa.Connection) -> None:
    command.upgrade(alembic_config(connection), "head")
