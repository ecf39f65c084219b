"""Restart by kind (issue 11): ``delivery_email.failure_kind``, ``permanent`` or
``transient``, so that ``restart-failed --transient-only`` leaves alone the emails that
would fail the same way again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09

Emails that failed before this revision are classified from their ``last_error``: the
pipeline has always written it as ``<error class>: <message>``, and a permanent failure's
class is ``PermanentError``. The others stay NULL ("not known to be permanent"), which
``--transient-only`` restarts. The backfill reads the (status, updated_at) index's
``failed`` range only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("delivery_email") as batch:
        batch.add_column(sa.Column("failure_kind", sa.String(16), nullable=True))
    op.execute(
        "UPDATE delivery_email SET failure_kind = 'permanent'"
        " WHERE status = 'failed' AND last_error LIKE 'PermanentError:%'"
    )


def downgrade() -> None:
    with op.batch_alter_table("delivery_email") as batch:
        batch.drop_column("failure_kind")
