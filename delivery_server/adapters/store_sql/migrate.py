"""Schema migrations with Alembic, run programmatically (no alembic.ini at runtime)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.database import Database
from delivery_server.adapters.store_sql.engine import create_engine
from delivery_server.adapters.store_sql.legacy_schema import (
    describe,
    drop_trigger_statements,
    trigger_statements,
)
from delivery_server.errors import RetryableError
from delivery_server.schema_map import SchemaMap

if TYPE_CHECKING:
    # Imported when an upgrade runs: Alembic (with Mako) costs every process that opens
    # the store ~28 MB, and only ``db upgrade`` and a starting task's upgrade need it.
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Our own version table: the database may also hold an upstream system's Alembic history.
VERSION_TABLE = "delivery_schema_version"
# Several tasks starting at once must not run the same migration twice.
MYSQL_LOCK_NAME = "delivery_server.schema_upgrade"
MYSQL_LOCK_TIMEOUT_SECONDS = 300


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic configuration for our script directory (``connection`` for env.py)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = VERSION_TABLE
    return config


async def upgrade_schema(database_url: str, schema_map: SchemaMap | None = None) -> None:
    """Create the tables or bring them to the latest revision; a no-op when current.
    With ``schema_map`` (DESIGN §11), also check it against the upstream system's tables,
    add the columns it names that are missing (``add_columns = true`` only) and create
    the triggers that keep their rows showing our state; without one, drop those."""
    database = Database(create_engine(database_url, pool_size=1))
    try:
        await database.run(lambda conn: _upgrade(conn, schema_map))
    finally:
        await database.close()


async def _upgrade(conn: AsyncConnection, schema_map: SchemaMap | None) -> None:
    if conn.dialect.name == "mysql":
        locked = await conn.scalar(
            sa.text("SELECT GET_LOCK(:name, :timeout)"),
            {"name": MYSQL_LOCK_NAME, "timeout": MYSQL_LOCK_TIMEOUT_SECONDS},
        )
        if locked != 1:
            raise RetryableError("another schema upgrade is still running")
        try:
            await conn.run_sync(_run_alembic, schema_map)
        finally:
            await conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": MYSQL_LOCK_NAME})
    else:  # SQLite: the write transaction (BEGIN IMMEDIATE) already excludes others
        await conn.run_sync(_run_alembic, schema_map)


def _run_alembic(connection: sa.Connection, schema_map: SchemaMap | None) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection), "head")
    if schema_map is None:
        statements = drop_trigger_statements()
    else:
        tables = describe(connection, schema_map, adding=True)
        statements = trigger_statements(connection.dialect, tables)
    for statement in statements:
        connection.exec_driver_sql(statement)
