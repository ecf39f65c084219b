"""Tracking (DESIGN §3): delivery status on emails, ``delivery_event``,
``delivery_suppression``, and why a job was paused.

Revision ID: 0003
Revises: 0002
Create Date: 2024-12-02

Types are spelled out here rather than imported from ``schema.py`` (see 0001). Adding
nullable columns is an in-place ALTER on both databases: no table is rebuilt, so this
runs in moments even on a table of millions of emails (MariaDB ≥10.3 adds them
instantly; SQLite only rewrites the schema text).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
ADDRESS = sa.String(320).with_variant(
    mysql.VARCHAR(320, collation="utf8mb4_bin"), "mysql", "mariadb"
)
OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}

EMAIL_COLUMNS = (
    "delivery_status",
    "delivery_detail",
    "delivery_updated_at",
    "opened_at",
    "clicked_at",
)


def upgrade() -> None:
    op.add_column("delivery_job", sa.Column("paused_reason", sa.Text(), nullable=True))
    op.add_column(
        "delivery_job",
        sa.Column("unsubscribe", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("delivery_email", sa.Column("delivery_status", sa.String(16), nullable=True))
    op.add_column("delivery_email", sa.Column("delivery_detail", sa.String(255), nullable=True))
    op.add_column("delivery_email", sa.Column("delivery_updated_at", TIMESTAMP, nullable=True))
    op.add_column("delivery_email", sa.Column("opened_at", TIMESTAMP, nullable=True))
    op.add_column("delivery_email", sa.Column("clicked_at", TIMESTAMP, nullable=True))
    op.create_index(
        "ix_delivery_email_provider_message_id", "delivery_email", ["provider_message_id"]
    )
    op.create_index(
        "ix_delivery_email_job_delivery", "delivery_email", ["job_id", "delivery_status"]
    )
    op.create_table(
        "delivery_event",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("email_id", ID, nullable=True),
        sa.Column("job_id", ID, nullable=True),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("provider_message_id", sa.String(255), nullable=False),
        sa.Column("occurred_at", TIMESTAMP, nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.Column("detail", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("reputation", sa.String(16), nullable=True),
        sa.UniqueConstraint(
            "provider_message_id", "event_type", "occurred_at", name="uq_delivery_event_once"
        ),
        **OPTIONS,
    )
    op.create_index("ix_delivery_event_email", "delivery_event", ["email_id", "occurred_at"])
    op.create_index(
        "ix_delivery_event_job_reputation",
        "delivery_event",
        ["job_id", "reputation", "email_id"],
    )
    op.create_table(
        "delivery_suppression",
        sa.Column("address", ADDRESS, primary_key=True),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        **OPTIONS,
    )
    op.create_index("ix_delivery_suppression_created", "delivery_suppression", ["created_at"])


def downgrade() -> None:
    op.drop_table("delivery_suppression")
    op.drop_table("delivery_event")
    op.drop_index("ix_delivery_email_job_delivery", "delivery_email")
    op.drop_index("ix_delivery_email_provider_message_id", "delivery_email")
    # SQLite drops columns by rebuilding the table (batch mode); MariaDB alters in place.
    with op.batch_alter_table("delivery_email") as batch:
        for name in EMAIL_COLUMNS:
            batch.drop_column(name)
    with op.batch_alter_table("delivery_job") as batch:
        batch.drop_column("paused_reason")
