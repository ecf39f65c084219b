"""One place that runs a unit of work in a transaction, retries contention and
translates database failures into the ``errors`` tree."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from delivery_server.adapters.store_sql.engine import (
    ANSWERED,
    WRITE_OPTION,
    Answered,
    Failure,
    classify,
)
from delivery_server.errors import RetryableError
from delivery_server.retry import Jitter, compute_backoff, retry_until

T = TypeVar("T")
Work = Callable[[AsyncConnection], Awaitable[T]]

# Deadlocks between claimers, publishers and the settler are normal under load on
# InnoDB; a few quick retries of the whole transaction make them invisible to the core.
CONTENTION_ATTEMPTS = 5
CONTENTION_BASE_DELAY = 0.01  # the first retry waits up to twice this, then doubling


class Database:
    """An engine plus the rules for using it: transactions, retries, error mapping."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        # SQLite has one writer at a time; queueing writers of this process here is
        # cheaper (and fairer) than letting them spin on the busy timeout.
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    async def run(self, work: Work[T], *, write: bool = True) -> T:
        """Run ``work`` in one transaction (committed when it returns, rolled back when
        it raises); retry it on deadlocks, and once on a pooled connection found dead at
        its first statement; raise ``RetryableError`` when the database cannot be
        reached. Errors raised by ``work`` itself pass through unchanged. (What ``work``
        does before its first statement may so run twice: keep it to the database.)"""
        stale_retried = False

        async def transaction() -> T:
            nonlocal stale_retried
            answered: Answered | None = None
            try:
                async with self._writer(write), self.engine.connect() as conn:
                    answered = conn.info[ANSWERED] = Answered()
                    if write and self.is_sqlite:
                        await conn.execution_options(**{WRITE_OPTION: True})
                    async with conn.begin():
                        return await work(conn)
            except sa_exc.DBAPIError as exc:
                if stale_retried or not _stale(exc, answered):
                    raise
                # Typically a database restart since the connection was last used: the
                # pool has dropped its other old connections too. Retried at once, once
                # per call, and not counted as a contention attempt.
                stale_retried = True
                return await transaction()

        try:
            return await retry_until(
                transaction,
                retry_on=_contention,
                delay=_contention_delay,
                attempts=CONTENTION_ATTEMPTS,
            )
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
            failure = classify(exc)
            if failure is Failure.CONTENTION:
                raise RetryableError("database busy: deadlock or lock wait timeout") from exc
            if failure is Failure.UNAVAILABLE:
                raise RetryableError("database unavailable: connection failed") from exc
            raise

    @contextlib.asynccontextmanager
    async def _writer(self, write: bool) -> AsyncIterator[None]:
        if write and self._write_lock is not None:
            async with self._write_lock:
                yield
        else:
            yield

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _contention(exc: Exception) -> bool:
    return classify(exc) is Failure.CONTENTION


def _contention_delay(failures: int) -> float:
    # Full jitter: the transactions that deadlocked each other must not retry in step.
    return compute_backoff(failures, base=2 * CONTENTION_BASE_DELAY, jitter=Jitter.FULL)


def _stale(exc: sa_exc.DBAPIError | sa_exc.TimeoutError, answered: Answered | None) -> bool:
    """A connection that was handed out but lost before anything of the transaction got
    an answer (not one that could not be opened: that is an outage)."""
    return (
        isinstance(exc, sa_exc.DBAPIError)
        and exc.connection_invalidated
        and answered is not None
        and not answered.value
    )
