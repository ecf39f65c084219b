"""LocalQueue beyond the contract: strict receipts, join(), wake-ups and scale."""

from __future__ import annotations

import asyncio
import time

import pytest

from delivery_server.adapters.queue_local import LocalQueue, clamp_visibility
from delivery_server.models import QueueMessage

pytestmark = pytest.mark.timeout(60)

LONG = 300


def messages(count: int, start: int = 1) -> list[QueueMessage]:
    return [QueueMessage(email_id=i, job_id=1) for i in range(start, start + count)]


async def until_waiting(queue: LocalQueue, receivers: int = 1) -> None:
    """Let other tasks run until ``receivers`` receives are parked in a long poll."""
    for _ in range(1000):
        if len(queue._receivers) >= receivers:
            return
        await asyncio.sleep(0)  # a yield to the loop, not a timed wait
    pytest.fail(f"{receivers} receivers never started waiting")


async def test_an_outdated_receipt_settles_nothing() -> None:
    queue = LocalQueue()
    await queue.publish(messages(1))
    [first] = await queue.receive(1, wait_seconds=0, visibility_timeout=0)
    [second] = await queue.receive(1, wait_seconds=0, visibility_timeout=LONG)

    await queue.delete([first.receipt])
    await queue.change_visibility(first.receipt, 0)

    assert await queue.backlog() == 0  # still in flight under the second receipt
    await queue.change_visibility(second.receipt, 0)
    [third] = await queue.receive(1, wait_seconds=0, visibility_timeout=LONG)
    assert third.receive_count == 3


async def test_a_visible_message_can_be_deleted_with_its_latest_receipt() -> None:
    queue = LocalQueue()
    await queue.publish(messages(1))
    [delivery] = await queue.receive(1, wait_seconds=0, visibility_timeout=0)
    assert await queue.backlog() == 1

    await queue.delete([delivery.receipt])

    assert await queue.backlog() == 0
    await queue.join(timeout=0)


async def test_change_visibility_leaves_a_message_that_is_visible_again_alone() -> None:
    queue = LocalQueue()
    await queue.publish(messages(1))
    [delivery] = await queue.receive(1, wait_seconds=0, visibility_timeout=0)

    await queue.change_visibility(delivery.receipt, LONG)

    assert await queue.backlog() == 1


async def test_shortened_visibility_wakes_a_waiting_receiver() -> None:
    queue = LocalQueue()
    await queue.publish(messages(1))
    [delivery] = await queue.receive(1, wait_seconds=0, visibility_timeout=LONG)
    waiting = asyncio.create_task(queue.receive(1, wait_seconds=20, visibility_timeout=LONG))
    await until_waiting(queue)
    started = time.monotonic()

    await queue.change_visibility(delivery.receipt, 1)
    [again] = await asyncio.wait_for(waiting, timeout=10)

    assert again.receive_count == 2
    assert 0.5 <= time.monotonic() - started < 5


async def test_join_returns_once_every_message_is_deleted() -> None:
    queue = LocalQueue()
    await queue.join(timeout=0)  # empty: at once
    await queue.publish(messages(30))

    async def worker() -> None:
        while batch := await queue.receive(7, wait_seconds=0.5, visibility_timeout=LONG):
            await queue.delete([d.receipt for d in batch])

    workers = [asyncio.create_task(worker()) for _ in range(3)]
    await queue.join(timeout=10)

    assert await queue.backlog() == 0
    await asyncio.gather(*workers)


async def test_join_times_out_while_messages_are_in_flight() -> None:
    queue = LocalQueue()
    await queue.publish(messages(2))
    await queue.receive(1, wait_seconds=0, visibility_timeout=LONG)

    with pytest.raises(TimeoutError, match="2 messages"):
        await queue.join(timeout=0.2)


async def test_concurrent_receivers_never_share_a_message() -> None:
    queue = LocalQueue()
    receivers = [
        asyncio.create_task(queue.receive(3, wait_seconds=5, visibility_timeout=LONG))
        for _ in range(5)
    ]
    await until_waiting(queue, receivers=5)
    await queue.publish(messages(15))

    batches = await asyncio.wait_for(asyncio.gather(*receivers), timeout=10)

    ids = [QueueMessage.from_body(d.body).email_id for batch in batches for d in batch]
    assert sorted(ids) == list(range(1, 16))
    assert [len(batch) for batch in batches] == [3] * 5
    assert await queue.backlog() == 0


async def test_a_cancelled_receive_leaves_no_waiter_behind() -> None:
    queue = LocalQueue()
    waiting = asyncio.create_task(queue.receive(1, wait_seconds=20, visibility_timeout=LONG))
    await until_waiting(queue)

    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    assert queue._receivers == set()
    await queue.publish(messages(1))
    assert len(await queue.receive(1, wait_seconds=0, visibility_timeout=LONG)) == 1


async def test_stale_heap_entries_are_compacted() -> None:
    queue = LocalQueue()
    await queue.publish(messages(1))
    [delivery] = await queue.receive(1, wait_seconds=0, visibility_timeout=LONG)

    for seconds in range(1000, 2000):
        await queue.change_visibility(delivery.receipt, seconds)

    assert len(queue._in_flight) <= 2 * 1 + 64 + 1


async def test_a_hundred_thousand_messages_flow_quickly() -> None:
    queue = LocalQueue()
    count = 100_000
    started = time.monotonic()

    assert await queue.publish(messages(count)) == set()
    assert await queue.backlog() == count
    seen = 0
    while batch := await queue.receive(100, wait_seconds=0, visibility_timeout=LONG):
        seen += len(batch)
        await queue.delete([d.receipt for d in batch])
    await queue.join(timeout=0)

    assert seen == count
    # O(log n) per message is well under a second here; quadratic behaviour is minutes.
    assert time.monotonic() - started < 15


async def test_receive_refuses_a_nonsensical_batch_size() -> None:
    with pytest.raises(ValueError, match="max_messages"):
        await LocalQueue().receive(0, wait_seconds=0, visibility_timeout=LONG)


@pytest.mark.parametrize(("given", "clamped"), [(-5, 0), (0, 0), (30, 30), (10**6, 43_200)])
def test_visibility_is_clamped_to_what_sqs_allows(given: int, clamped: int) -> None:
    assert clamp_visibility(given) == clamped
