"""The SQL store: MySQL/MariaDB in production, SQLite embedded (DESIGN §2 to §4)."""

from delivery_server.adapters.store_sql.migrate import upgrade_schema
from delivery_server.adapters.store_sql.store import SqlStore

__all__ = ["SqlStore", "upgrade_schema"]
