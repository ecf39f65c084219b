"""One settlement per received message (``settlement.Settlement``): it settles exactly
once, leaving its block unsettled hands the message back, and its deletes are batched
(full batches of ten, the rest after a short wait, everything on close)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from delivery_server.models import Delivery
from delivery_server.settlement import ERROR_RETRY_SECONDS, Settled, Settlements

pytestmark = pytest.mark.timeout(10)


class RecordingQueue:
    """The two settling calls of ``ports.Queue``, recorded; either can be made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.visibility: list[tuple[str, int]] = []
        self.deleted = asyncio.Event()
        self.fail_visibility: Exception | None = None
        self.fail_delete: Exception | None = None

    async def delete(self, receipts: Sequence[str]) -> None:
        self.batches.append(list(receipts))
        self.deleted.set()
        if self.fail_delete is not None:
            raise self.fail_delete

    async def change_visibility(self, receipt: str, timeout_seconds: int) -> None:
        self.visibility.append((receipt, timeout_seconds))
        if self.fail_visibility is not None:
            raise self.fail_visibility


def settlements_on(queue: RecordingQueue, *, delete_delay: float = 0.05) -> Settlements:
    return Settlements(queue, delete_delay=delete_delay)  # type: ignore[arg-type]


def delivery(receipt: str) -> Delivery:
    return Delivery(body="{}", receipt=receipt)


async def test_a_burst_goes_out_in_full_batches_and_the_rest_after_the_wait() -> None:
    queue = RecordingQueue()
    settlements = settlements_on(queue, delete_delay=0.05)
    for n in range(23):
        await settlements.of(delivery(f"r{n}")).delete()

    while sum(len(b) for b in queue.batches) < 23:
        queue.deleted.clear()
        await queue.deleted.wait()
    await settlements.close()

    assert [len(b) for b in queue.batches] == [20, 3]  # one call per ten, by the queue
    assert [r for b in queue.batches for r in b] == [f"r{n}" for n in range(23)]


async def test_close_flushes_what_is_left_at_once() -> None:
    queue = RecordingQueue()
    settlements = settlements_on(queue, delete_delay=30)
    await settlements.of(delivery("a")).delete()
    await settlements.of(delivery("b")).delete()
    await asyncio.sleep(0)

    await asyncio.wait_for(settlements.close(), 5)

    assert queue.batches == [["a", "b"]]


async def test_a_failed_delete_is_not_the_handlers_problem() -> None:
    queue = RecordingQueue()
    queue.fail_delete = ConnectionError("queue away")
    settlements = settlements_on(queue, delete_delay=30)
    await settlements.of(delivery("a")).delete()

    await asyncio.wait_for(settlements.close(), 5)  # logged; the message comes back later

    assert queue.batches == [["a"]]


@pytest.mark.parametrize(
    ("how", "visibility", "settled"),
    [
        ("retry_after", [("r", 30)], Settled.RETRY_LATER),
        ("hand_back", [("r", 0)], Settled.HANDED_BACK),
    ],
)
async def test_retry_after_and_hand_back_change_the_visibility_once(
    how: str, visibility: list[tuple[str, int]], settled: Settled
) -> None:
    queue = RecordingQueue()
    async with settlements_on(queue).of(delivery("r")) as settlement:
        if how == "retry_after":
            await settlement.retry_after(30)
        else:
            await settlement.hand_back()

    assert settlement.settled is settled
    assert queue.visibility == visibility
    assert queue.batches == []


async def test_a_deleted_message_is_not_handed_back_on_exit() -> None:
    queue = RecordingQueue()
    settlements = settlements_on(queue)
    async with settlements.of(delivery("r")) as settlement:
        await settlement.delete()
    await settlements.close()

    assert settlement.settled is Settled.DELETED
    assert queue.batches == [["r"]]
    assert queue.visibility == []


async def test_a_second_settlement_is_refused_and_reaches_no_queue() -> None:
    queue = RecordingQueue()
    settlements = settlements_on(queue)
    async with settlements.of(delivery("r")) as settlement:
        await settlement.retry_after(5)
        with pytest.raises(RuntimeError, match="already settled"):
            await settlement.delete()
        with pytest.raises(RuntimeError, match="already settled"):
            await settlement.hand_back()
    await settlements.close()

    assert settlement.settled is Settled.RETRY_LATER
    assert queue.visibility == [("r", 5)]
    assert queue.batches == []


async def test_leaving_the_block_unsettled_hands_the_message_back() -> None:
    queue = RecordingQueue()
    async with settlements_on(queue).of(delivery("r")) as settlement:
        pass

    assert settlement.settled is Settled.HANDED_BACK
    assert queue.visibility == [("r", 0)]


async def test_an_error_in_the_block_hands_the_message_back_later_and_passes_through() -> None:
    queue = RecordingQueue()
    with pytest.raises(KeyError, match="bug"):
        async with settlements_on(queue).of(delivery("r")) as settlement:
            raise KeyError("bug")

    # Not at once: an error that is not the message's own would come straight back.
    assert settlement.settled is Settled.RETRY_LATER
    assert queue.visibility == [("r", ERROR_RETRY_SECONDS)]


async def test_a_cancelled_handler_hands_its_message_back() -> None:
    queue = RecordingQueue()
    entered = asyncio.Event()

    async def handler() -> None:
        async with settlements_on(queue).of(delivery("r")):
            entered.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(handler())
    await entered.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert queue.visibility == [("r", 0)]


async def test_a_failed_hand_back_on_exit_does_not_hide_the_blocks_error() -> None:
    queue = RecordingQueue()
    queue.fail_visibility = ConnectionError("queue away")

    with pytest.raises(KeyError, match="bug"):
        async with settlements_on(queue).of(delivery("r")):
            raise KeyError("bug")

    # Tried; the message comes back after its visibility timeout.
    assert queue.visibility == [("r", ERROR_RETRY_SECONDS)]


async def test_a_failed_retry_is_still_its_settlement_not_followed_by_a_hand_back() -> None:
    queue = RecordingQueue()
    queue.fail_visibility = ConnectionError("queue away")

    with pytest.raises(ConnectionError):
        async with settlements_on(queue).of(delivery("r")) as settlement:
            await settlement.retry_after(60)

    assert settlement.settled is Settled.RETRY_LATER
    assert queue.visibility == [("r", 60)]  # no hand-back that would undo the delay


async def test_a_negative_retry_delay_is_refused_and_settles_nothing() -> None:
    queue = RecordingQueue()
    async with settlements_on(queue).of(delivery("r")) as settlement:
        with pytest.raises(ValueError, match="retry delay cannot be negative"):
            await settlement.retry_after(-1)
        assert settlement.settled is None

    assert queue.visibility == [("r", 0)]
