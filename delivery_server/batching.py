"""One batcher: items that arrive together go out together, when a batch is full or late.

Two kinds of work use it. The SQL store's group commit (``store_sql.emails``): concurrent
claims or send records become one transaction, and each caller still waits for *its
own* result (``submit`` returns only once its batch is committed, so nothing downstream,
such as an SQS delete, can run ahead of a write). And the queue deletes behind
``settlement``: a settled message is ``post``-ed and the handler moves on, the receipts
leave ten to a request.

One batch is in flight at a time per batcher; items arriving meanwhile form the next one.
The flushing task exists only while there is something to flush.
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
    """Runs ``run(items)`` for the items handed in together; ``run`` returns one result
    per item, in order. A failure of ``run`` is raised to every caller of that batch.

    A batch is full at ``max_size`` items and then goes at once; a partial one is held
    open up to ``max_delay`` seconds for more to arrive (0: it takes what has arrived by
    the time the previous batch is done). ``batches_per_call`` full batches go to one
    call of ``run`` (None: every full batch waiting, for a ``run`` that splits them into
    concurrent requests itself)."""

    def __init__(
        self,
        run: RunBatch[T, R],
        *,
        max_size: int = 50,
        max_delay: float = 0.0,
        batches_per_call: int | None = 1,
        on_abandoned: Abandoned[T, R] | None = None,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"batch max_size must be at least 1, not {max_size}")
        if batches_per_call is not None and batches_per_call < 1:
            raise ValueError(f"batches_per_call must be at least 1, not {batches_per_call}")
        self._run = run
        self._max_size = max_size
        self._max_delay = max_delay
        self._call_limit = None if batches_per_call is None else max_size * batches_per_call
        self._on_abandoned = on_abandoned
        # A posted item has no future: nobody waits for it.
        self._waiting: list[tuple[T, asyncio.Future[R] | None]] = []
        self._full = asyncio.Event()
        self._closing = False
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Add ``item`` to the next batch; return its result once that batch is done."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._add(item, future)
        return await future

    def post(self, item: T) -> None:
        """Add ``item`` to the next batch and return at once. Nobody sees its result or
        its batch's failure (logged): for work whose loss the caller can live with."""
        self._add(item, None)

    async def close(self) -> None:
        """Send what is pending without waiting for ``max_delay``, and wait for the
        batches under way (call before closing what ``run`` uses)."""
        self._closing = True
        self._full.set()  # wakes a flusher holding a partial batch open
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    def _add(self, item: T, future: asyncio.Future[R] | None) -> None:
        self._waiting.append((item, future))
        if len(self._waiting) >= self._max_size:
            self._full.set()
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all())

    async def _flush_all(self) -> None:
        try:
            while self._waiting:
                held_open = False
                if self._max_delay > 0 and not self._closing:
                    if len(self._waiting) < self._max_size:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._full.wait(), self._max_delay)
                    held_open = not self._closing and len(self._waiting) >= self._max_size
                batch = self._take(whole_batches_only=held_open)
                # A caller cancelled before its batch started needs nothing done.
                batch = [(i, future) for i, future in batch if future is None or not future.done()]
                if batch:
                    await self._run_batch(batch)
        except BaseException:
            # Cancelled (the loop is shutting down): nobody will run these any more.
            for _, future in self._waiting:
                if future is not None:
                    future.cancel()
            if self._waiting:
                log.warning("batch_items_dropped", items=len(self._waiting))
            self._waiting.clear()
            raise
        finally:
            self._flusher = None

    def _take(self, *, whole_batches_only: bool) -> list[tuple[T, asyncio.Future[R] | None]]:
        # Full batches only while the wait is not over: items come in bursts (a batch of
        # send records commits at once), and 23 receipts sent as 10 + 10 + 3 would pay a
        # third request for the three that the next burst fills up.
        count = len(self._waiting)
        if whole_batches_only:
            count = count // self._max_size * self._max_size
        if self._call_limit is not None:
            count = min(count, self._call_limit)
        batch = self._waiting[:count]
        del self._waiting[:count]
        if len(self._waiting) < self._max_size:
            self._full.clear()
        return batch

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R] | None]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                if future is not None:
                    future.cancel()
            raise
        except Exception as exc:  # every caller of the batch sees its failure
            _fail(batch, exc)
            return
        abandoned = []
        for (item, future), result in zip(batch, results, strict=True):
            if future is None:
                continue
            if future.done():  # its caller was cancelled while the batch ran
                abandoned.append((item, result))
            else:
                future.set_result(result)
        if abandoned and self._on_abandoned is not None:
            try:
                await self._on_abandoned(abandoned)
            except Exception as exc:  # leases and the reconciler settle them later
                log.warning("abandoned_batch_items_not_settled", error=type(exc).__name__)


def _fail(batch: list[tuple[T, asyncio.Future[R] | None]], exc: Exception) -> None:
    waited_for = [future for _, future in batch if future is not None]
    for future in waited_for:
        if not future.done():
            future.set_exception(exc)
    if len(waited_for) < len(batch):  # posted items have nobody to tell
        log.warning("posted_batch_failed", items=len(batch), error=type(exc).__name__)
