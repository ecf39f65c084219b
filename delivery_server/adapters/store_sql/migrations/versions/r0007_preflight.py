"""Pre-flight and finding things (issue 11): ``delivery_attachment_digest`` and an index
on ``delivery_email.to_address``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09

Types are spelled out here rather than imported from ``schema.py`` (see 0001). The
digest table is new; the index is built online on MariaDB/MySQL (InnoDB adds a secondary
index without blocking writes), so a table of millions of emails stays in use.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "delivery_attachment_digest",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("job_id", ID, nullable=False),
        sa.Column("email_id", ID, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("checked_at", TIMESTAMP, nullable=False),
        **OPTIONS,
    )
    op.create_index(
        "ix_delivery_attachment_digest_email",
        "delivery_attachment_digest",
        ["email_id", "number", "checked_at"],
    )
    op.create_index(
        "ix_delivery_attachment_digest_job", "delivery_attachment_digest", ["job_id", "id"]
    )
    op.create_index("ix_delivery_email_to_address", "delivery_email", ["to_address"])


def downgrade() -> None:
    op.drop_index("ix_delivery_email_to_address", table_name="delivery_email")
    op.drop_table("delivery_attachment_digest")
