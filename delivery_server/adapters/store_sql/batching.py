"""Group commit: concurrent calls of one kind run together, as one transaction.

Every consumer handler claims its email and, after the send, records it: two short
transactions per email, each paying a pool checkout, a few round trips and a commit. A
``Batcher`` turns the calls that arrive together (ten handlers started by one receive,
sends finishing within a few milliseconds of each other) into one transaction for all of
them, while each caller still waits for *its own* outcome: ``submit`` returns only once
the batch is committed, so nothing downstream (an SQS delete) can run ahead of a write.

One batch is in flight at a time per batcher; calls arriving meanwhile form the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")

RunBatch = Callable[[list[T]], Awaitable[Sequence[R]]]
# Called with (item, result) pairs whose caller stopped waiting (was cancelled).
Abandoned = Callable[[list[tuple[T, R]]], Awaitable[None]]


class Batcher(Generic[T, R]):
    """Runs ``run(items)`` for the items submitted together; ``run`` returns one result
    per item, in order. A failure of ``run`` is raised to every caller of that batch.

    ``max_delay`` > 0 holds a batch open that long (unless it fills up first), trading a
    little latency for fewer transactions when calls trickle in; 0 takes what has
    arrived by the time the previous batch is done."""

    def __init__(
        self,
        run: RunBatch[T, R],
        *,
        max_size: int = 50,
        max_delay: float = 0.0,
        on_abandoned: Abandoned[T, R] | None = None,
    ) -> None:
        self._run = run
        self._max_size = max_size
        self._max_delay = max_delay
        self._on_abandoned = on_abandoned
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._full = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Add ``item`` to the next batch; return its result once that batch is done."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if len(self._waiting) >= self._max_size:
            self._full.set()
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all())
        return await future

    async def close(self) -> None:
        """Wait for the batches under way (call before closing the database)."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush_all(self) -> None:
        try:
            while self._waiting:
                if self._max_delay > 0 and len(self._waiting) < self._max_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), self._max_delay)
                batch = self._waiting[: self._max_size]
                del self._waiting[: self._max_size]
                if len(self._waiting) < self._max_size:
                    self._full.clear()
                # A caller cancelled before its batch started needs nothing done.
                batch = [(item, future) for item, future in batch if not future.done()]
                if batch:
                    await self._run_batch(batch)
        except BaseException:
            # Cancelled (the loop is shutting down): nobody will run these any more.
            for _, future in self._waiting:
                future.cancel()
            self._waiting.clear()
            raise
        finally:
            self._flusher = None

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # every caller of the batch sees its failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        abandoned = []
        for (item, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller was cancelled while the batch ran
                abandoned.append((item, result))
            else:
                future.set_result(result)
        if abandoned and self._on_abandoned is not None:
            try:
                await self._on_abandoned(abandoned)
            except Exception as exc:  # leases and the reconciler settle them later
                log.warning("abandoned_batch_items_not_settled", error=type(exc).__name__)
