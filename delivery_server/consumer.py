"""The consumer: one fetcher and a bounded pool of handlers (STYLE rule 4).

The fetcher receives only as many messages as there are free handler slots, and only once
a full receive batch of them is free, so nothing is buffered beyond ``concurrency`` and a
slow provider slows the fetch (backpressure).

Shutdown has three stages (STYLE rule 5): stop fetching; let in-flight emails finish within
the grace period; cancel the rest, which hands their messages back (see ``Pipeline``)
within the cancel deadline. Grace and deadline are both parameters, as in saq's
``Worker``: together they must fit in the orchestrator's stop timeout (see ``Settings``).
"""

from __future__ import annotations

import asyncio

import structlog

from delivery_server.heartbeats import Heartbeats
from delivery_server.loops import Backoff, wait_or_stop
from delivery_server.models import Delivery
from delivery_server.pipeline import Pipeline
from delivery_server.ports import Queue

log = structlog.get_logger(__name__)

LOOP_NAME = "consumer"
RECEIVE_BATCH = 10  # the most SQS hands out per ReceiveMessage
LONG_POLL_SECONDS = 20.0  # the longest SQS long poll


class Consumer:
    """Receives messages and runs the pipeline on each, at most ``concurrency`` at once."""

    def __init__(
        self,
        queue: Queue,
        pipeline: Pipeline,
        heartbeats: Heartbeats,
        *,
        concurrency: int,
        visibility_timeout: int,
        shutdown_grace: float,
        cancel_deadline: float,
        wait_seconds: float = LONG_POLL_SECONDS,
    ) -> None:
        self._queue = queue
        self._pipeline = pipeline
        self._heartbeats = heartbeats
        self._slots = asyncio.Semaphore(concurrency)
        self._receive_batch = min(RECEIVE_BATCH, concurrency)
        self._visibility_timeout = visibility_timeout
        self._shutdown_grace = shutdown_grace
        self._cancel_deadline = cancel_deadline
        self._wait_seconds = wait_seconds
        # Strong references: the event loop keeps only weak ones to running tasks.
        self._handlers: set[asyncio.Task[None]] = set()

    async def _take_slots(self) -> int:
        """Wait for a full receive batch of free slots (all of them when there are fewer).

        Not fewer: each receive starts one claim transaction of its messages (three
        statements whatever its size), and its receive and delete requests cost the same
        for one message as for ten. So a handful of slots freed one by one waits for the
        rest of a batch, at the price of up to ``RECEIVE_BATCH - 1`` idle slots: raise
        ``DELIVERY_CONCURRENCY`` where the provider's latency, not CPU, bounds a task."""
        taken = 0
        while taken < self._receive_batch:
            await self._slots.acquire()
            taken += 1
        return taken

    def _release(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()

    def _start_handler(self, delivery: Delivery) -> None:
        task = asyncio.create_task(self._handle(delivery))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            await self._pipeline.handle(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the pipeline settles what it can; the lease does the rest
            log.exception("handler_failed", error_type=type(exc).__name__)
        finally:
            self._slots.release()

    async def _fetch(self, stop: asyncio.Event) -> None:
        backoff = Backoff(maximum=30.0)
        while not stop.is_set():
            taken = await self._take_slots()
            if stop.is_set():
                self._release(taken)
                return
            try:
                deliveries = await self._queue.receive(
                    taken, self._wait_seconds, self._visibility_timeout
                )
            except asyncio.CancelledError:
                self._release(taken)
                raise
            except Exception as exc:  # queue unreachable: back off, keep the CPU low
                self._release(taken)
                delay = backoff.next_delay()
                log.warning("receive_failed", error=str(exc)[:300], retry_in=delay)
                self._heartbeats.beat(LOOP_NAME)
                await wait_or_stop(stop, delay)
                continue
            backoff.reset()
            self._heartbeats.beat(LOOP_NAME)
            self._release(taken - len(deliveries))
            if stop.is_set():
                await self._hand_back(deliveries)
                return
            for delivery in deliveries:
                self._start_handler(delivery)

    async def _hand_back(self, deliveries: list[Delivery]) -> None:
        """Make messages received during shutdown visible again at once."""
        results = await asyncio.gather(
            *(self._queue.change_visibility(d.receipt, 0) for d in deliveries),
            return_exceptions=True,
        )
        self._release(len(deliveries))
        if deliveries:
            log.info("messages_handed_back", count=len(deliveries))
        for result in results:
            if isinstance(result, Exception):  # it comes back after its timeout instead
                log.warning("hand_back_failed", error=type(result).__name__)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then shut down in three stages."""
        self._heartbeats.register(LOOP_NAME, allowance=self._wait_seconds * 3 + 30)
        fetcher = asyncio.create_task(self._fetch(stop))
        try:
            stopping = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({fetcher, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if fetcher in done:
                fetcher.result()  # the fetcher only ends by raising: surface it
        finally:
            await self._shut_down(fetcher)
            self._heartbeats.unregister(LOOP_NAME)

    async def _shut_down(self, fetcher: asyncio.Task[None]) -> None:
        # Stage 1: stop fetching. No receive starts any more; one under way may finish
        # within the grace period and hands back what it got. (Cut short, its messages
        # could be delivered to a connection nobody reads, and stay invisible for the
        # whole visibility timeout.)
        # Stage 2: meanwhile, in-flight emails may finish within the grace period.
        busy = {fetcher, *self._handlers}
        if self._handlers:
            log.info("draining", inflight=len(self._handlers), grace=self._shutdown_grace)
        _, pending = await asyncio.wait(busy, timeout=self._shutdown_grace)
        # Stage 3: cancel the rest; each handler hands its message back or records
        # `unknown` (see Pipeline), and a cut receive's messages return after their timeout.
        # One still busy after the deadline is not waited for, so that the process exits
        # before SIGKILL; its message comes back when its visibility timeout ends.
        if pending:
            log.warning("cancelling_inflight", count=len(pending - {fetcher}))
            for task in pending:
                task.cancel()
            _, stuck = await asyncio.wait(pending, timeout=self._cancel_deadline)
            if stuck:
                log.warning("cancel_deadline_passed", count=len(stuck - {fetcher}))
        if fetcher.done() and not fetcher.cancelled() and fetcher.exception() is not None:
            log.warning("fetcher_failed", error=type(fetcher.exception()).__name__)
