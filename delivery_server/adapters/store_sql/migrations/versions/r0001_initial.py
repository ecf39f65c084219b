"""The tables of DESIGN §3: templates, jobs and emails.

Revision ID: 0001
Revises:
Create Date: 2024-11-26

Types are spelled out here rather than imported from ``schema.py``: a migration must keep
building the same tables after the schema module moves on.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
BODY = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "delivery_template",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("locale", sa.String(35), nullable=False, server_default="en"),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("text_body", BODY, nullable=False),
        sa.Column("html_body", BODY, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.UniqueConstraint("name", "locale", "version", name="uq_delivery_template_version"),
        **OPTIONS,
    )
    op.create_table(
        "delivery_job",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("template_name", sa.String(255), nullable=False),
        sa.Column("from_address", sa.String(320), nullable=False),
        sa.Column("reply_to", sa.String(320), nullable=True),
        sa.Column("scheduled_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("total_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("sent_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failed_count", sa.Integer(), nullable=False, server_default="0"),
        **OPTIONS,
    )
    op.create_index("ix_delivery_job_status_scheduled", "delivery_job", ["status", "scheduled_at"])
    op.create_table(
        "delivery_email",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column(
            "job_id",
            ID,
            sa.ForeignKey("delivery_job.id", ondelete="CASCADE", name="fk_delivery_email_job"),
            nullable=False,
        ),
        sa.Column("to_address", sa.String(320), nullable=False),
        sa.Column("locale", sa.String(35), nullable=True),
        sa.Column("variables", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("attachments", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("provider_message_id", sa.String(255), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("sent_at", TIMESTAMP, nullable=True),
        sa.Column("lease_until", TIMESTAMP, nullable=True),
        **OPTIONS,
    )
    op.create_index("ix_delivery_email_job_status", "delivery_email", ["job_id", "status", "id"])
    op.create_index("ix_delivery_email_status_updated", "delivery_email", ["status", "updated_at"])


def downgrade() -> None:
    op.drop_table("delivery_email")
    op.drop_table("delivery_job")
    op.drop_table("delivery_template")
