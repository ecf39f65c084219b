"""Batched acknowledgement: settled messages are deleted ten at a time.

A delete that is lost (the process dies first) is harmless: the message comes back after
its visibility timeout, the claim finds the email no longer ``queued``, and drops it.
"""

from __future__ import annotations

import asyncio

import structlog

from delivery_server.ports import Queue

log = structlog.get_logger(__name__)

SQS_BATCH = 10


class DeleteBatcher:
    """Collects receipt handles and deletes them in batches of ten, or after ``max_delay``."""

    def __init__(self, queue: Queue, *, max_delay: float = 0.05) -> None:
        self._queue = queue
        self._max_delay = max_delay
        self._pending: list[str] = []
        self._has_items = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False

    async def delete(self, receipt: str) -> None:
        """Queue a receipt for deletion (returns at once)."""
        self._pending.append(receipt)
        self._has_items.set()
        if len(self._pending) >= SQS_BATCH:
            self._full.set()

    async def _flush(self, whole: bool) -> None:
        # Full batches only, unless the wait is over: settles come in bursts (a batch of
        # send records commits at once), and 23 receipts sent as 10 + 10 + 3 would pay
        # a third call for the three that the next burst fills up.
        cut = len(self._pending) if whole else len(self._pending) // SQS_BATCH * SQS_BATCH
        batch, self._pending = self._pending[:cut], self._pending[cut:]
        if not self._pending:
            self._has_items.clear()
        if len(self._pending) < SQS_BATCH:
            self._full.clear()
        if not batch:
            return
        try:
            await self._queue.delete(batch)
        except Exception as exc:  # the messages come back and are dropped by the claim
            log.warning("delete_failed", messages=len(batch), error=type(exc).__name__)

    async def run(self) -> None:
        """Flush until ``close`` is called and nothing is left."""
        while True:
            await self._has_items.wait()
            waited_out = False
            if not self._closing and len(self._pending) < SQS_BATCH:
                try:
                    await asyncio.wait_for(self._full.wait(), self._max_delay)
                except TimeoutError:
                    waited_out = True
            await self._flush(whole=waited_out or self._closing)
            if self._closing and not self._pending:
                return

    def close(self) -> None:
        """Flush what is pending and let ``run`` return."""
        self._closing = True
        self._has_items.set()
        self._full.set()  # wakes a flusher waiting for a full batch
