"""Adoption (issue 11): template pinning, send-by deadlines, retention bookkeeping, and
database defaults so that upstream systems can insert jobs and emails with plain SQL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Types are spelled out here rather than imported from ``schema.py`` (see 0001). The
defaults are the insert contract of the README: an upstream ``INSERT`` names the job's
name, template and sender, and each email's job, address and variables; the database
fills in the states (``draft`` / ``pending``), the times (UTC) and the counters.
``UTC_TIMESTAMP(6)`` and not ``CURRENT_TIMESTAMP``: the latter is the session's time zone
on MariaDB and MySQL, and every timestamp here is naive UTC. Expression defaults need
MariaDB ≥ 10.2.1 or MySQL ≥ 8.0.13; SQLite's ``CURRENT_TIMESTAMP`` is UTC already (and
SQLite changes a default only by rebuilding the table: batch mode).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _utc_now() -> sa.TextClause:
    if op.get_context().dialect.name == "mysql":
        return sa.text("(UTC_TIMESTAMP(6))")
    return sa.text("(CURRENT_TIMESTAMP)")


def upgrade() -> None:
    now = _utc_now()
    with op.batch_alter_table("delivery_job") as batch:
        batch.add_column(sa.Column("template_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("send_by", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("purged_at", TIMESTAMP, nullable=True))
        batch.alter_column(
            "status", existing_type=sa.String(16), existing_nullable=False, server_default="draft"
        )
        batch.alter_column(
            "created_at", existing_type=TIMESTAMP, existing_nullable=False, server_default=now
        )
    with op.batch_alter_table("delivery_email") as batch:
        batch.add_column(sa.Column("template_version", sa.Integer(), nullable=True))
        batch.alter_column(
            "status", existing_type=sa.String(16), existing_nullable=False, server_default="pending"
        )
        for name in ("created_at", "updated_at"):
            batch.alter_column(
                name, existing_type=TIMESTAMP, existing_nullable=False, server_default=now
            )


def downgrade() -> None:
    with op.batch_alter_table("delivery_email") as batch:
        for name in ("status", "created_at", "updated_at"):
            batch.alter_column(name, server_default=None)
        batch.drop_column("template_version")
    with op.batch_alter_table("delivery_job") as batch:
        for name in ("status", "created_at"):
            batch.alter_column(name, server_default=None)
        for name in ("purged_at", "send_by", "template_version"):
            batch.drop_column(name)
