"""Live sending processes (``delivery_instance``), for sharing the account's send rate.

Revision ID: 0002
Revises: 0001
Create Date: 2024-11-26
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "delivery_instance",
        sa.Column("instance_id", sa.String(100), primary_key=True),
        sa.Column("last_seen", TIMESTAMP, nullable=False),
        **OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("delivery_instance")
