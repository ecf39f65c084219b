"""Alembic script directory of the SQL store (see ``migrate.py``)."""
