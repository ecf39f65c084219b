"""Batched acknowledgement (``acks.DeleteBatcher``): full batches of ten, the rest after
a short wait, everything on close."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from delivery_server.acks import DeleteBatcher

pytestmark = pytest.mark.timeout(10)


class RecordingQueue:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.deleted = asyncio.Event()

    async def delete(self, receipts: Sequence[str]) -> None:
        self.batches.append(list(receipts))
        self.deleted.set()


async def test_a_burst_goes_out_in_full_batches_and_the_rest_after_the_wait() -> None:
    queue = RecordingQueue()
    acks = DeleteBatcher(queue, max_delay=0.05)  # type: ignore[arg-type]
    runner = asyncio.create_task(acks.run())
    for n in range(23):
        await acks.delete(f"r{n}")

    while sum(len(b) for b in queue.batches) < 23:
        queue.deleted.clear()
        await queue.deleted.wait()
    acks.close()
    await runner

    assert [len(b) for b in queue.batches] == [20, 3]  # one call per ten, by the queue
    assert [r for b in queue.batches for r in b] == [f"r{n}" for n in range(23)]


async def test_close_flushes_what_is_left_at_once() -> None:
    queue = RecordingQueue()
    acks = DeleteBatcher(queue, max_delay=30)  # type: ignore[arg-type]
    runner = asyncio.create_task(acks.run())
    await acks.delete("a")
    await acks.delete("b")
    await asyncio.sleep(0)

    acks.close()
    await asyncio.wait_for(runner, 5)

    assert queue.batches == [["a", "b"]]
