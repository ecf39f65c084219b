"""The consumer's fetcher (``consumer.Consumer``): it receives a full batch of messages
or none, so that a receive, and the claim transaction it starts, carries as many emails
as SQS hands out at once; with fewer handler slots than that, all of them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast

import pytest

from delivery_server.adapters.queue_local import LocalQueue
from delivery_server.consumer import RECEIVE_BATCH, Consumer
from delivery_server.heartbeats import Heartbeats
from delivery_server.models import Delivery, QueueMessage
from delivery_server.pipeline import Pipeline

pytestmark = pytest.mark.timeout(10)


class RecordingQueue(LocalQueue):
    """An in-process queue that remembers how many messages each receive asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[int] = []

    async def receive(
        self, max_messages: int, wait_seconds: float, visibility_timeout: int
    ) -> list[Delivery]:
        self.asked.append(max_messages)
        return await super().receive(max_messages, wait_seconds, visibility_timeout)


class HeldPipeline:
    """Handles a delivery once it is released (by count), deleting its message."""

    def __init__(self, queue: LocalQueue) -> None:
        self._queue = queue
        self.started = 0
        self._releases = asyncio.Semaphore(0)
        self._changed = asyncio.Condition()

    async def until_started(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.started == count)

    def release(self, count: int) -> None:
        for _ in range(count):
            self._releases.release()

    async def handle(self, delivery: Delivery) -> None:
        async with self._changed:
            self.started += 1
            self._changed.notify_all()
        await self._releases.acquire()
        await self._queue.delete([delivery.receipt])


async def run_consumer(
    concurrency: int,
    messages: int,
    check: Callable[[RecordingQueue, HeldPipeline], Awaitable[None]],
) -> None:
    queue = RecordingQueue()
    await queue.publish([QueueMessage(email_id=i, job_id=1) for i in range(messages)])
    pipeline = HeldPipeline(queue)
    consumer = Consumer(
        queue,
        cast(Pipeline, pipeline),
        Heartbeats(),
        concurrency=concurrency,
        visibility_timeout=60,
        shutdown_grace=1.0,
        cancel_deadline=1.0,
        wait_seconds=0.05,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    try:
        await check(queue, pipeline)
    finally:
        pipeline.release(messages)
        stop.set()
        await running


async def test_a_receive_waits_for_a_full_batch_of_free_slots() -> None:
    # 12 slots: the first receive takes 10; the 2 left do not start a receive of their
    # own: the next one waits until 10 are free again.
    async def partial(queue: RecordingQueue, pipeline: HeldPipeline) -> None:
        await pipeline.until_started(RECEIVE_BATCH)
        for _ in range(100):  # the loop runs on; no receive of 2 starts
            await asyncio.sleep(0)
        assert queue.asked == [RECEIVE_BATCH]
        pipeline.release(8)
        await pipeline.until_started(2 * RECEIVE_BATCH)
        assert queue.asked[:2] == [RECEIVE_BATCH, RECEIVE_BATCH]

    await run_consumer(12, 30, partial)


async def test_with_fewer_slots_than_a_batch_a_receive_takes_them_all() -> None:
    async def check(queue: RecordingQueue, pipeline: HeldPipeline) -> None:
        await pipeline.until_started(4)
        pipeline.release(4)
        await pipeline.until_started(8)
        assert queue.asked[:2] == [4, 4]

    await run_consumer(4, 8, check)


async def test_a_shallow_queue_is_handled_at_once() -> None:
    """A full batch of slots, not of messages: one message waiting is received and
    handled without waiting for more."""

    async def check(queue: RecordingQueue, pipeline: HeldPipeline) -> None:
        await pipeline.until_started(1)
        assert queue.asked[0] == RECEIVE_BATCH

    await run_consumer(32, 1, check)
