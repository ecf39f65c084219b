"""``SqlStore``: the one ``ports.Store`` adapter, for MySQL/MariaDB and SQLite."""

from __future__ import annotations

from delivery_server.adapters.store_sql.admin import AdminQueries
from delivery_server.adapters.store_sql.database import Database
from delivery_server.adapters.store_sql.emails import EmailQueries
from delivery_server.adapters.store_sql.engine import create_engine
from delivery_server.adapters.store_sql.gauges import GaugeQueries
from delivery_server.adapters.store_sql.instances import InstanceQueries
from delivery_server.adapters.store_sql.listing import ListingQueries
from delivery_server.adapters.store_sql.lookup import LookupQueries
from delivery_server.adapters.store_sql.opt_outs import OptOutQueries
from delivery_server.adapters.store_sql.pausing import PauseQueries
from delivery_server.adapters.store_sql.publishing import PublishingQueries
from delivery_server.adapters.store_sql.retention import RetentionQueries
from delivery_server.adapters.store_sql.suppressions import SuppressionQueries
from delivery_server.adapters.store_sql.tokens import TokenQueries
from delivery_server.adapters.store_sql.tracking import TrackingQueries


class SqlStore(
    GaugeQueries,
    PublishingQueries,
    EmailQueries,
    AdminQueries,
    InstanceQueries,
    TrackingQueries,
    SuppressionQueries,
    ListingQueries,
    TokenQueries,
    PauseQueries,
    RetentionQueries,
    LookupQueries,
    OptOutQueries,
):
    """Everything the database does (``ports.Store``), over one connection pool.

    Tables must exist: run :func:`~delivery_server.adapters.store_sql.upgrade_schema`
    (``delivery-server db upgrade``) first. Database outages and persistent deadlocks
    surface as ``errors.RetryableError``."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._counted_at = {}
        self._init_batchers()
        self._init_tracking()
        self._init_gauges()

    @classmethod
    async def connect(cls, database_url: str, *, pool_size: int = 10) -> SqlStore:
        """A store for ``mysql://user:pass@host:3306/db`` or ``sqlite:///path.db``.

        Connections are opened lazily, on first use; a bad URL is a ``ConfigError``."""
        return cls(Database(create_engine(database_url, pool_size=pool_size)))

    async def close(self) -> None:
        """Finish the batches under way, then release the connection pool."""
        await self._close_batchers()
        await self._close_unqueue()
        await self._close_tracking()
        await self._db.close()
