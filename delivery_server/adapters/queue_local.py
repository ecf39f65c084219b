"""An in-process queue with SQS semantics: the embedded-mode queue, also used by tests.

What it keeps from SQS, because the consumer relies on it:

* at-least-once delivery with a **visibility timeout**: a received message is hidden for
  the timeout, then delivered again unless it was deleted;
* a new **receipt handle** per receive; only the latest one settles the message, so a
  stale handle (the message was received again since, or is gone) is a harmless no-op;
* an **ApproximateReceiveCount** per message;
* **long polling**: ``receive`` waits up to ``wait_seconds`` and wakes as soon as a
  message is published or an in-flight message becomes visible again (no busy loop);
* visibility timeouts clamped to SQS's 0..43200 seconds.

What it does differently: ``receive`` honours any ``max_messages`` (SQS caps at 10), and
ordering is first-in first-out (SQS standard queues only try). There is no dead-letter
queue and nothing survives the process: it is for one embedded process, not a cluster.

Every operation is O(log n) in the number of messages: visible messages wait in an
insertion-ordered dict, in-flight ones in a heap keyed by the time they become visible.
A heap entry carries a lease token, so deleting or re-leasing a message just leaves a
stale entry behind, skipped when popped and compacted away when they pile up.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from delivery_server.models import Delivery, QueueMessage

log = structlog.get_logger(__name__)

MAX_VISIBILITY_TIMEOUT = 43_200  # seconds; what SQS allows
_NOT_IN_FLIGHT = 0  # lease token of a visible message


@dataclass(slots=True)
class _Message:
    """What the queue keeps per message: the body and its delivery state, nothing else."""

    body: str
    receive_count: int = 0
    receipt: str | None = None  # handle of the latest receive: the only one that settles it
    lease: int = _NOT_IN_FLIGHT  # token of the current in-flight period
    visible_at: float = 0.0


def clamp_visibility(seconds: int) -> int:
    """A visibility timeout within what SQS accepts (0..43200 s)."""
    return min(max(int(seconds), 0), MAX_VISIBILITY_TIMEOUT)


def _wake(waiters: set[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    waiters.clear()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class LocalQueue:
    """``ports.Queue`` in process memory, with SQS semantics (see the module docstring)."""

    def __init__(self) -> None:
        self._messages: dict[int, _Message] = {}
        self._visible: OrderedDict[int, None] = OrderedDict()  # message ids, oldest first
        self._in_flight: list[tuple[float, int, int]] = []  # heap of (visible_at, lease, id)
        self._in_flight_count = 0  # live entries in the heap; the rest are stale
        self._ids = itertools.count(1)
        self._tokens = itertools.count(1)  # leases and receipts, never reused
        self._receivers: set[asyncio.Future[None]] = set()
        self._drain_waiters: set[asyncio.Future[None]] = set()

    async def publish(self, messages: Sequence[QueueMessage]) -> set[int]:
        """Enqueue every message; an in-process queue never refuses one, so returns ``set()``."""
        await self.publish_bodies([message.to_body() for message in messages])
        return set()

    async def publish_bodies(self, bodies: Sequence[str]) -> None:
        """Enqueue raw message bodies as they are, like ``SendMessage`` on SQS.

        For queues that carry other bodies than the email queue's messages: the embedded
        events queue gets SES event JSON this way, and is read with ``receive`` as the
        tracker reads SQS. Never refuses a body.
        """
        for body in bodies:
            message_id = next(self._ids)
            self._messages[message_id] = _Message(body)
            self._visible[message_id] = None
        if bodies:
            _wake(self._receivers)

    async def receive(
        self, max_messages: int, wait_seconds: float, visibility_timeout: int
    ) -> list[Delivery]:
        """Take up to ``max_messages`` visible messages, waiting up to ``wait_seconds`` for
        one; each stays hidden for ``visibility_timeout`` seconds unless deleted."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait_seconds, 0.0)
        while True:
            now = loop.time()
            self._release_due(now)
            if self._visible:
                return self._lease(max_messages, now, clamp_visibility(visibility_timeout))
            if now >= deadline:
                return []
            # Sleep until the deadline or until the next in-flight message is due,
            # whichever is first; publish and earlier leases wake us sooner.
            wake_at = min(deadline, self._in_flight[0][0]) if self._in_flight else deadline
            await self._wait(self._receivers, wake_at - now)

    async def delete(self, receipts: Sequence[str]) -> None:
        """Remove the messages these receipts settle; stale or unknown receipts are ignored."""
        for receipt in receipts:
            message_id = self._find(receipt)
            if message_id is None:
                continue
            message = self._messages.pop(message_id)
            if message.lease != _NOT_IN_FLIGHT:
                self._in_flight_count -= 1  # its heap entry is now stale
            else:
                self._visible.pop(message_id, None)
        if not self._messages:
            _wake(self._drain_waiters)

    async def change_visibility(self, receipt: str, timeout_seconds: int) -> None:
        """Show an in-flight message again after ``timeout_seconds`` (0: at once). A stale
        receipt, or a message no longer in flight, is left alone as SQS would refuse it."""
        now = asyncio.get_running_loop().time()
        self._release_due(now)
        message_id = self._find(receipt)
        message = self._messages.get(message_id) if message_id is not None else None
        if message_id is None or message is None or message.lease == _NOT_IN_FLIGHT:
            log.debug("queue.change_visibility_ignored", reason="stale receipt or not in flight")
            return
        seconds = clamp_visibility(timeout_seconds)
        if seconds == 0:
            message.lease = _NOT_IN_FLIGHT
            self._in_flight_count -= 1
            self._visible[message_id] = None
            _wake(self._receivers)
        else:
            self._in_flight_count -= 1  # _push_in_flight counts it again
            self._push_in_flight(message_id, message, now + seconds)

    async def backlog(self) -> int:
        """How many messages are visible now (exact, unlike SQS)."""
        self._release_due(asyncio.get_running_loop().time())
        return len(self._visible)

    async def depth(self) -> int:
        """How many messages the queue holds, visible or in flight (exact; this queue has
        no delayed messages)."""
        return len(self._messages)

    async def join(self, timeout: float | None = None) -> None:
        """Wait until the queue holds no message at all, visible or in flight (every
        message deleted). Raise ``TimeoutError`` if that takes longer than ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._messages:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"{len(self._messages)} messages still in the queue")
            await self._wait(self._drain_waiters, remaining)

    # -- internals ---------------------------------------------------------------------

    def _find(self, receipt: str) -> int | None:
        """The id of the message this receipt still settles, or ``None`` when stale."""
        text, sep, _ = receipt.partition(":")
        if not sep or not text.isdigit():
            return None
        message_id = int(text)
        message = self._messages.get(message_id)
        if message is None or message.receipt != receipt:
            return None
        return message_id

    def _lease(self, max_messages: int, now: float, visibility: int) -> list[Delivery]:
        deliveries: list[Delivery] = []
        while self._visible and len(deliveries) < max_messages:
            message_id, _ = self._visible.popitem(last=False)
            message = self._messages[message_id]
            message.receive_count += 1
            message.receipt = f"{message_id}:{next(self._tokens)}"
            self._push_in_flight(message_id, message, now + visibility)
            deliveries.append(Delivery(message.body, message.receipt, message.receive_count))
        return deliveries

    def _push_in_flight(self, message_id: int, message: _Message, visible_at: float) -> None:
        """Hide a message until ``visible_at``; wake receivers whose sleep now ends too late."""
        due_first = self._in_flight[0][0] if self._in_flight else math.inf
        message.lease = next(self._tokens)
        message.visible_at = visible_at
        heapq.heappush(self._in_flight, (visible_at, message.lease, message_id))
        self._in_flight_count += 1
        if visible_at < due_first:
            _wake(self._receivers)
        # Deleted and re-leased messages leave stale entries behind; keep them a minority
        # so memory stays proportional to what is really in flight.
        if len(self._in_flight) > 2 * self._in_flight_count + 64:
            self._in_flight = [e for e in self._in_flight if self._is_live(e)]
            heapq.heapify(self._in_flight)

    def _is_live(self, entry: tuple[float, int, int]) -> bool:
        message = self._messages.get(entry[2])
        return message is not None and message.lease == entry[1]

    def _release_due(self, now: float) -> None:
        """Make in-flight messages whose visibility timeout has passed visible again."""
        while self._in_flight and self._in_flight[0][0] <= now:
            entry = heapq.heappop(self._in_flight)
            if self._is_live(entry):
                self._messages[entry[2]].lease = _NOT_IN_FLIGHT
                self._in_flight_count -= 1
                self._visible[entry[2]] = None

    async def _wait(self, waiters: set[asyncio.Future[None]], seconds: float | None) -> None:
        """Sleep until woken through ``waiters`` or until ``seconds`` have passed."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        waiters.add(waiter)
        timer = None if seconds is None else loop.call_later(max(seconds, 0.0), _resolve, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            waiters.discard(waiter)
