"""An in-memory SQS standard queue: visibility timeouts, receive counts, long polling.

Visible messages wait in a FIFO deque; received (in-flight) and delayed messages wait in a
heap ordered by the moment they become visible again, so every operation is O(log n).
Heap entries are never removed eagerly: each carries the message's ``generation`` at push
time, and an entry whose generation is out of date (the message was deleted, received
again or had its visibility changed) is simply skipped when it reaches the top.

Long-polling receivers park on futures. A send wakes as many of them as it added
messages; a single timer armed at the earliest visibility deadline wakes them when
in-flight messages come back. Nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# Message states, plain ints because they are compared on every receive.
_READY = 0
_INFLIGHT = 1
_DELAYED = 2
_GONE = 3

MAX_VISIBILITY_TIMEOUT = 43_200  # 12 hours, as SQS
MAX_WAIT_SECONDS = 20
MAX_RECEIVE_BATCH = 10


class ReceiptInvalidError(Exception):
    """The receipt handle is unknown, stale (the message was received again) or deleted."""


class NotInFlightError(Exception):
    """The message of this receipt is visible again, so its visibility cannot change."""


def uuid_sequence() -> Callable[[], str]:
    """Unique UUID-shaped ids, cheaply: a random prefix and a counter (in a profile of
    event publishing, a uuid4 per message and per notification was a visible share of the
    CPU; docs/benchmarks.md)."""
    hex_prefix = uuid.uuid4().hex
    prefix = f"{hex_prefix[:8]}-{hex_prefix[8:12]}-{hex_prefix[12:16]}-{hex_prefix[16:20]}-"
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter):012x}"


def body_md5(body: str) -> str:
    """The MD5 SQS reports for a body (SDKs other than botocore check it)."""
    return hashlib.md5(body.encode("utf-8"), usedforsecurity=False).hexdigest()


@dataclass(slots=True, eq=False)
class StoredMessage:
    """One message as the queue holds it."""

    message_id: str
    body: str
    md5: str
    sent_ms: int
    state: int
    receive_count: int = 0
    first_receive_ms: int = 0
    receipt: str | None = None
    visible_at: float = 0.0
    generation: int = 0


# (visible_at, tie-breaker, generation at push time, message)
_HeapEntry = tuple[float, int, int, StoredMessage]


class SimQueue:
    """A standard (not FIFO) queue with SQS visibility and receipt semantics."""

    def __init__(
        self,
        name: str,
        visibility_timeout: int = 30,
        delay_seconds: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.visibility_timeout = visibility_timeout
        self.delay_seconds = delay_seconds
        self.created_s = int(time.time())
        self._clock = clock
        self._ready: deque[StoredMessage] = deque()
        self._hidden: list[_HeapEntry] = []
        self._receipts: dict[str, StoredMessage] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._tie = itertools.count()
        self._next_id = uuid_sequence()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.visible_count = 0
        self.inflight_count = 0
        self.delayed_count = 0

    # -- producing ---------------------------------------------------------------------

    def send(self, body: str, delay_seconds: int | None = None) -> StoredMessage:
        """Append a message; it is visible now or after its delay."""
        delay = self.delay_seconds if delay_seconds is None else delay_seconds
        msg = StoredMessage(
            message_id=self._next_id(),
            body=body,
            md5=body_md5(body),
            sent_ms=int(time.time() * 1000),
            state=_READY,
        )
        if delay > 0:
            msg.state = _DELAYED
            self.delayed_count += 1
            self._hide(msg, self._clock() + delay)
        else:
            self._ready.append(msg)
            self.visible_count += 1
            self._wake(1)
        return msg

    # -- consuming ---------------------------------------------------------------------

    def take(self, max_messages: int, visibility_timeout: int) -> list[tuple[StoredMessage, str]]:
        """Receive up to ``max_messages`` visible messages without waiting.

        Each gets a new receipt handle (the previous one stops working) and stays
        invisible for ``visibility_timeout`` seconds.
        """
        now = self._clock()
        self._promote(now)
        taken: list[tuple[StoredMessage, str]] = []
        ready = self._ready
        while ready and len(taken) < max_messages:
            msg = ready.popleft()
            if msg.state != _READY:  # deleted while visible: a stale deque entry
                continue
            self.visible_count -= 1
            self.inflight_count += 1
            msg.state = _INFLIGHT
            msg.receive_count += 1
            if msg.receive_count == 1:
                msg.first_receive_ms = int(time.time() * 1000)
            if msg.receipt is not None:
                del self._receipts[msg.receipt]
            receipt = f"{msg.message_id}#{msg.receive_count}#{next(self._tie)}"
            msg.receipt = receipt
            self._receipts[receipt] = msg
            self._hide(msg, now + visibility_timeout)
            taken.append((msg, receipt))
        return taken

    async def receive(
        self, max_messages: int, wait_seconds: float, visibility_timeout: int
    ) -> list[tuple[StoredMessage, str]]:
        """Like ``take``, but wait up to ``wait_seconds`` for a first message (long poll)."""
        taken = self.take(max_messages, visibility_timeout)
        if taken or wait_seconds <= 0:
            return taken
        loop = asyncio.get_running_loop()
        deadline = self._clock() + wait_seconds
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                return []
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            self._arm_timer(loop)
            timeout = loop.call_later(remaining, _resolve, waiter)
            try:
                await waiter
            finally:
                timeout.cancel()
                if not waiter.done():  # cancelled by the client going away
                    waiter.cancel()
                with contextlib.suppress(ValueError):  # already popped by _wake
                    self._waiters.remove(waiter)
            taken = self.take(max_messages, visibility_timeout)
            if taken:
                return taken

    # -- settling ----------------------------------------------------------------------

    def delete(self, receipt: str) -> None:
        """Delete the message whose latest receipt this is (even if visible again)."""
        msg = self._receipts.pop(receipt, None)
        if msg is None:
            raise ReceiptInvalidError(receipt)
        if msg.state == _READY:
            self.visible_count -= 1
        elif msg.state == _INFLIGHT:
            self.inflight_count -= 1
        msg.state = _GONE
        msg.generation += 1

    def change_visibility(self, receipt: str, timeout_seconds: int) -> None:
        """Make an in-flight message visible after ``timeout_seconds`` from now (0: now)."""
        msg = self._receipts.get(receipt)
        if msg is None:
            raise ReceiptInvalidError(receipt)
        now = self._clock()
        self._promote(now)
        if msg.state != _INFLIGHT:
            raise NotInFlightError(receipt)
        msg.generation += 1
        if timeout_seconds <= 0:
            self.inflight_count -= 1
            self.visible_count += 1
            msg.state = _READY
            self._ready.append(msg)
            self._wake(1)
        else:
            self._hide(msg, now + timeout_seconds)

    def purge(self) -> None:
        """Drop every message; all receipt handles become invalid."""
        for msg in self._receipts.values():
            msg.state = _GONE
        for msg in self._ready:
            msg.state = _GONE
        for entry in self._hidden:
            entry[3].state = _GONE
        self._ready.clear()
        self._hidden.clear()
        self._receipts.clear()
        self.visible_count = self.inflight_count = self.delayed_count = 0

    def counts(self) -> tuple[int, int, int]:
        """(visible, in flight, delayed), after bringing expired messages back."""
        self._promote(self._clock())
        return self.visible_count, self.inflight_count, self.delayed_count

    def close(self) -> None:
        """Release parked receivers (empty-handed) and the visibility timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake(len(self._waiters))

    # -- internals ---------------------------------------------------------------------

    def _hide(self, msg: StoredMessage, visible_at: float) -> None:
        msg.visible_at = visible_at
        heapq.heappush(self._hidden, (visible_at, next(self._tie), msg.generation, msg))
        if self._waiters and self._hidden[0][3] is msg:
            self._arm_timer(asyncio.get_running_loop())

    def _promote(self, now: float) -> int:
        """Move messages whose invisibility has ended back to the visible deque."""
        hidden = self._hidden
        promoted = 0
        while hidden and hidden[0][0] <= now:
            _, _, generation, msg = heapq.heappop(hidden)
            if generation != msg.generation:
                continue
            if msg.state == _INFLIGHT:
                self.inflight_count -= 1
            elif msg.state == _DELAYED:
                self.delayed_count -= 1
            else:
                continue
            msg.state = _READY
            self.visible_count += 1
            self._ready.append(msg)
            promoted += 1
        return promoted

    def _wake(self, count: int) -> None:
        waiters = self._waiters
        while count > 0 and waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    def _arm_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make sure parked receivers wake when the earliest hidden message comes back."""
        if not self._hidden:
            return
        top = self._hidden[0][0]
        if self._timer is not None:
            if self._timer_at <= top:
                return
            self._timer.cancel()
        self._timer_at = top
        # A millisecond late on purpose: loop timers (uvloop's especially) have millisecond
        # resolution, and waking early would only find nothing and re-arm.
        delay = max(top - self._clock(), 0.0) + 0.001
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        promoted = self._promote(self._clock())
        if promoted:
            self._wake(promoted)
        if self._waiters:
            self._arm_timer(asyncio.get_running_loop())


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
