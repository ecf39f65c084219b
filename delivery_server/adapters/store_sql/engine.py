"""Engines for the two supported databases, and how their errors map onto ours.

``mysql://`` becomes aiomysql (utf8mb4, READ COMMITTED) and ``sqlite:///path`` becomes
aiosqlite (WAL, a busy timeout, foreign keys, explicit BEGINs). Nothing is created at
import time: the composition root calls :func:`create_engine`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolResetState

from delivery_server.errors import ConfigError

SETTING = "configuration error: DELIVERY_DATABASE_URL"
# A connection option that makes the SQLite BEGIN take the write lock at once.
WRITE_OPTION = "delivery_write"
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
# Under RDS/ProxySQL idle connections are cut after a while; recycle well before.
MYSQL_POOL_RECYCLE_SECONDS = 1800
MYSQL_CONNECT_TIMEOUT_SECONDS = 10

# Where ``Database.run`` keeps its ``Answered`` for the transaction on a connection.
ANSWERED = "delivery_answered"

# MySQL/MariaDB error numbers.
_DEADLOCK = frozenset({1213, 1205})  # deadlock found; lock wait timeout exceeded
_CONNECTION = frozenset({1040, 1053, 1927, 2002, 2003, 2006, 2013, 2055, 4031})


class Failure(Enum):
    """How the store reacts to a database error."""

    CONTENTION = "contention"  # deadlock or lock timeout: retry the transaction here
    UNAVAILABLE = "unavailable"  # connection lost or refused: RetryableError to the core
    OTHER = "other"  # a bug or a schema problem: let it surface as it is


def async_url(database_url: str) -> sa.URL:
    """Map the configured URL onto the async driver; refuse anything else."""
    try:
        url = sa.make_url(database_url)
    except (sa_exc.ArgumentError, ValueError) as exc:  # ValueError: a non-numeric port
        # The message never repeats the URL: it may hold a password.
        raise ConfigError(f"{SETTING}: not a valid database URL") from exc
    if url.drivername in ("mysql", "mysql+aiomysql"):
        query = {"charset": "utf8mb4", **url.query}
        return url.set(drivername="mysql+aiomysql", query=query)
    if url.drivername in ("sqlite", "sqlite+aiosqlite"):
        if not url.database or url.database == ":memory:":
            # Each pooled connection would get its own empty in-memory database.
            raise ConfigError(f"{SETTING}: use a SQLite file (sqlite:///path.db)")
        return url.set(drivername="sqlite+aiosqlite")
    raise ConfigError(f"{SETTING}: must start with mysql:// or sqlite:///")


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine for ``database_url`` with the settings the store relies on."""
    url = async_url(database_url)
    common: dict[str, Any] = {
        "json_serializer": _dump_json,
        "pool_size": pool_size,
        "max_overflow": pool_size,
        "pool_timeout": 30,
        # The pool would send a ROLLBACK at every checkin, even right after our COMMIT:
        # one wasted round trip per transaction. ``_reset_connection`` only rolls back
        # a transaction that is really still open.
        "pool_reset_on_return": None,
    }
    if url.get_backend_name() == "mysql":
        engine = create_async_engine(
            url,
            # Fewer gap locks (so fewer deadlocks) than REPEATABLE READ; the claim and
            # publish paths need only row locks. A claim by primary key still waits for a
            # publisher's uncommitted row instead of skipping it (tested).
            isolation_level="READ COMMITTED",
            # No pre-ping: it costs a round trip per transaction. A pooled connection
            # that died meanwhile fails at its first statement instead, which
            # ``Database.run`` retries once on a new connection (see ``Answered``).
            pool_recycle=MYSQL_POOL_RECYCLE_SECONDS,
            connect_args={"connect_timeout": MYSQL_CONNECT_TIMEOUT_SECONDS},
            **common,
        )
    else:
        engine = create_async_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}, **common
        )
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
        event.listen(engine.sync_engine, "begin", _begin_sqlite)
    event.listen(engine.sync_engine, "reset", _reset_connection)
    event.listen(engine.sync_engine, "after_cursor_execute", _note_answered)
    return engine


@dataclass(slots=True)
class Answered:
    """Whether the server answered a statement of the current transaction: until it has,
    a lost connection cannot have run anything of it (nothing commits without an answered
    COMMIT either), so the transaction can safely start over on another connection."""

    value: bool = False


def _note_answered(conn: sa.Connection, *_args: Any) -> None:
    answered = conn.info.get(ANSWERED)
    if answered is not None:
        answered.value = True


def _dump_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _reset_connection(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
    if state.terminate_only or state.transaction_was_reset or not state.asyncio_safe:
        return
    if _transaction_open(dbapi_connection.driver_connection):
        dbapi_connection.rollback()


def _transaction_open(driver_connection: Any) -> bool:
    """Whether the server (aiomysql) or the SQLite library (aiosqlite) still has a
    transaction open on this connection; True when that cannot be told."""
    try:
        if hasattr(driver_connection, "get_transaction_status"):  # aiomysql: server flags
            return bool(driver_connection.get_transaction_status())
        return bool(driver_connection.in_transaction)
    except Exception:  # a closed connection: let the rollback fail and the pool discard it
        return True


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own implicit BEGIN cannot be told to take the write lock, so the
    # "begin" listener below emits every BEGIN itself (the SQLAlchemy aiosqlite recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Safe with WAL (a power cut may lose the last commits, never corrupt the file).
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _begin_sqlite(connection: sa.Connection) -> None:
    # A read-then-write transaction that starts deferred can fail with SQLITE_BUSY when
    # another process wrote meanwhile, without waiting for the busy timeout; IMMEDIATE
    # takes the write lock up front, so writers queue instead of failing.
    if connection.get_execution_options().get(WRITE_OPTION):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


def classify(exc: BaseException) -> Failure:
    """Decide whether a database error is contention, an outage or something else."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return Failure.UNAVAILABLE
    if not isinstance(exc, sa_exc.DBAPIError):
        return Failure.OTHER
    if exc.connection_invalidated:
        return Failure.UNAVAILABLE
    orig = exc.orig
    code = orig.args[0] if orig is not None and orig.args else None
    if isinstance(code, int):
        if code in _DEADLOCK:
            return Failure.CONTENTION
        if code in _CONNECTION:
            return Failure.UNAVAILABLE
        return Failure.OTHER
    message = str(orig).lower()
    if "database is locked" in message or "database is busy" in message:
        return Failure.CONTENTION
    if isinstance(exc, sa_exc.InterfaceError) or "unable to open database" in message:
        return Failure.UNAVAILABLE
    return Failure.OTHER
