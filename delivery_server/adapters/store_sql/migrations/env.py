"""Alembic environment: runs on the connection that ``migrate.upgrade_schema`` passes in."""

from __future__ import annotations

from alembic import context

from delivery_server.adapters.store_sql.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through delivery_server.adapters.store_sql.upgrade_schema")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=context.config.attributes["version_table"],
    # SQLite cannot ALTER most things: later migrations rebuild tables in batch mode.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
