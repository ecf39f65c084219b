"""The old job manager's own tables, as the legacy-schema tests find them: CHAR(1) states,
their own column names, integer keys not named ``id`` (config/schema-map.toml maps them)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from delivery_server.adapters.store_sql.engine import create_engine
from delivery_server.schema_map import SchemaMap, load_schema_map

MAP_FILE = Path(__file__).parents[2] / "config" / "schema-map.toml"

legacy = sa.MetaData()
eed_job = sa.Table(
    "eed_job",
    legacy,
    sa.Column("job_id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("state", sa.CHAR(1), nullable=False),
    sa.Column("title", sa.String(255), nullable=True),
    sa.Column("template", sa.String(255), nullable=False),
    sa.Column("sender", sa.String(320), nullable=False),
    sa.Column("created", sa.DateTime(), nullable=True),
    sa.Column("done_at", sa.DateTime(), nullable=True),
    mysql_engine="InnoDB",
)
eed_mail = sa.Table(
    "eed_mail",
    legacy,
    sa.Column("mail_id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.Integer(), nullable=False, index=True),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("params", sa.Text(), nullable=False),
    sa.Column("lang", sa.String(35), nullable=True),
    sa.Column("files", sa.Text(), nullable=True),
    sa.Column("state", sa.CHAR(1), nullable=False),
    sa.Column("sent_time", sa.DateTime(), nullable=True),
    sa.Column("msg_id", sa.String(255), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)


def schema_map() -> SchemaMap:
    return load_schema_map(MAP_FILE)


async def create_legacy_tables(database_url: str) -> None:
    """The upstream system's tables, as they were before delivery-server came."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(legacy.create_all)
    finally:
        await engine.dispose()
