"""One settlement per received message (STYLE rule 6): the only way the core deletes a
message, hides it for a retry or hands it back.

    async with settlements.of(delivery) as settlement:
        ...                             # claim, send, record
        await settlement.delete()       # or retry_after(seconds) / hand_back()

A settlement settles its message exactly once and remembers how; leaving the block
unsettled hands the message back, so no path can forget it and none can settle it twice.
A cancellation (shutdown) hands it back at once, for another consumer; an unexpected error
hands it back after ``ERROR_RETRY_SECONDS``: such an error is rarely the message's own (the
database is down, say), and handing it back at once would receive and fail it again in a
hot loop.

Deletes are batched (``batching.Batcher``): a settled message is deleted with up to nine
others in one request, and the handler does not wait for it. A delete that is lost (the
process dies first, the request fails) is harmless: the message comes back after its
visibility timeout, the claim finds the email no longer ``queued``, and drops it.
"""

from __future__ import annotations

from enum import StrEnum
from types import TracebackType

import structlog

from delivery_server.batching import Batcher
from delivery_server.models import Delivery
from delivery_server.ports import Queue

log = structlog.get_logger(__name__)

SQS_BATCH = 10  # receipts per DeleteMessageBatch
# How long a partial batch of deletes waits for more: settles come in bursts.
DELETE_DELAY = 0.05
ERROR_RETRY_SECONDS = 30


class Settled(StrEnum):
    """How a message was settled."""

    DELETED = "deleted"  # done with: the email is sent, failed, unknown or not ours
    RETRY_LATER = "retry_later"  # hidden, to come back after a delay
    HANDED_BACK = "handed_back"  # visible again at once


class Settlement:
    """Settles one received message; use it as ``async with`` around its handling."""

    def __init__(self, delivery: Delivery, queue: Queue, deletes: Batcher[str, None]) -> None:
        self._receipt = delivery.receipt
        self._queue = queue
        self._deletes = deletes
        self._settled: Settled | None = None

    @property
    def settled(self) -> Settled | None:
        """How the message was settled, or None while it is not."""
        return self._settled

    async def delete(self) -> None:
        """Remove the message from the queue (batched; returns at once)."""
        self._settle(Settled.DELETED)
        self._deletes.post(self._receipt)

    async def retry_after(self, seconds: int) -> None:
        """Hide the message for ``seconds``, then let it be received again."""
        if seconds < 0:
            raise ValueError(f"a retry delay cannot be negative, not {seconds} seconds")
        self._settle(Settled.RETRY_LATER)
        await self._queue.change_visibility(self._receipt, seconds)

    async def hand_back(self) -> None:
        """Make the message visible again at once, for any consumer to take."""
        self._settle(Settled.HANDED_BACK)
        await self._queue.change_visibility(self._receipt, 0)

    def _settle(self, how: Settled) -> None:
        # Remembered before the queue call: a failed call leaves the message to its
        # visibility timeout, and a second call (say, a hand-back on exit) could undo a
        # retry delay that SQS did apply but whose answer was lost.
        if self._settled is not None:  # a bug in the handler, not a queue condition
            raise RuntimeError(f"message already settled ({self._settled}), cannot be {how}")
        self._settled = how

    async def __aenter__(self) -> Settlement:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._settled is not None:
            return
        try:
            if isinstance(exc, Exception):
                await self.retry_after(ERROR_RETRY_SECONDS)
            else:
                await self.hand_back()
        except Exception as error:  # it comes back after its visibility timeout instead
            log.warning("hand_back_failed", error=type(error).__name__)


class Settlements:
    """Opens the settlement of each received message of one queue and batches their
    deletes; ``close`` sends the deletes still pending."""

    def __init__(self, queue: Queue, *, delete_delay: float = DELETE_DELAY) -> None:
        self._queue = queue
        self._deletes: Batcher[str, None] = Batcher(
            self._delete,
            max_size=SQS_BATCH,
            max_delay=delete_delay,
            # The queue sends a long list as concurrent requests of ten.
            batches_per_call=None,
        )

    def of(self, delivery: Delivery) -> Settlement:
        """The settlement of one received message (not settled yet)."""
        return Settlement(delivery, self._queue, self._deletes)

    async def close(self) -> None:
        """Send the pending deletes at once and wait for them."""
        await self._deletes.close()

    async def _delete(self, receipts: list[str]) -> list[None]:
        try:
            await self._queue.delete(receipts)
        except Exception as exc:  # the messages come back and are dropped by the claim
            log.warning("delete_failed", messages=len(receipts), error=type(exc).__name__)
        return [None] * len(receipts)
