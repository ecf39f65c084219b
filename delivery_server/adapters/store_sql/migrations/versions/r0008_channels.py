"""Channels (issue 15, DESIGN §12): ``delivery_job.channel`` and ``delivery_job.target``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-16

Types are spelled out here rather than imported from ``schema.py`` (see 0001). Every job
that exists is an email job: the server default says so, for rows written before this
revision and for upstream systems that insert jobs without naming a channel. Adding a
column with a default to ``delivery_job`` (one row per job, not per email) is quick on
MariaDB/MySQL even for a long history.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column(
        "delivery_job",
        sa.Column("channel", sa.String(16), nullable=False, server_default="email"),
    )
    # Where a drop or webhook job delivers (s3://…, sftp://…, https://…); NULL for
    # email and sms. Never holds a secret: SFTP credentials and signing keys are settings.
    op.add_column("delivery_job", sa.Column("target", sa.String(1024), nullable=True))


def downgrade() -> None:
    op.drop_column("delivery_job", "target")
    op.drop_column("delivery_job", "channel")
