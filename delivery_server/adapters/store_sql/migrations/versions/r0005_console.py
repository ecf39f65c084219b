"""The operator console (issue 13): ``delivery_api_token`` and ``delivery_audit``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08

Types are spelled out here rather than imported from ``schema.py`` (see 0001). Two new
tables and nothing else: existing tables are not touched.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "delivery_api_token",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_used_at", TIMESTAMP, nullable=True),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.UniqueConstraint("name", name="uq_delivery_api_token_name"),
        sa.UniqueConstraint("token_hash", name="uq_delivery_api_token_hash"),
        **OPTIONS,
    )
    op.create_table(
        "delivery_audit",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("job_id", ID, nullable=True),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        **OPTIONS,
    )
    op.create_index("ix_delivery_audit_job", "delivery_audit", ["job_id", "id"])


def downgrade() -> None:
    op.drop_table("delivery_audit")
    op.drop_table("delivery_api_token")
