"""The migrations' head, read from the script directory: tests that upgrade a database
check it reaches the head without naming a revision each new migration would change."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from delivery_server.adapters.store_sql.migrate import alembic_config


def head_revision() -> str:
    """The one head revision (raises when the history has branched: two heads)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations"
    return head
