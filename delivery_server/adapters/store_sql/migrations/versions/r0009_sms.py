"""SMS (issue 15, DESIGN §12): ``delivery_template.sms_body``, what an ``sms`` job renders.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-16

Types are spelled out here rather than imported from ``schema.py`` (see 0001). A nullable
column without a default on ``delivery_template`` (one row per template version) is
quick on MariaDB/MySQL; existing templates have no SMS body, so an sms job naming one
fails each recipient with a clear reason rather than sending an empty text.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("delivery_template", sa.Column("sms_body", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("delivery_template", "sms_body")
