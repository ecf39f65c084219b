"""Segments (issue 15, DESIGN §12): ``delivery_email.segments``, what a send was billed
as, and ``delivery_job.max_segments``, an sms job's own cap.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-17

Types are spelled out here rather than imported from ``schema.py`` (see 0001). Both are
nullable without a default, which MariaDB adds in place (instant ADD COLUMN) even on a
long ``delivery_email``. ``segments`` is written with the send record by channels that
are billed per part (an SMS's segments), NULL for the others and for sends before this
revision; ``max_segments`` NULL means ``DELIVERY_SMS_MAX_SEGMENTS`` applies.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("delivery_job", sa.Column("max_segments", sa.SmallInteger(), nullable=True))
    with op.batch_alter_table("delivery_email") as batch:
        batch.add_column(sa.Column("segments", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery_email") as batch:
        batch.drop_column("segments")
    op.drop_column("delivery_job", "max_segments")
