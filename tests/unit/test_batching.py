"""The batcher (``batching.Batcher``) as the store's group commit uses it: calls made
together run as one batch, each caller gets its own result, and nobody is left waiting."""

from __future__ import annotations

import asyncio

import pytest

from delivery_server.batching import Batcher

pytestmark = pytest.mark.timeout(10)


class Recorder:
    """A batch function that records its batches and can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        self.started.set()
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [item * 10 for item in items]


async def test_calls_made_together_run_as_one_batch_with_their_own_results() -> None:
    run = Recorder()
    batcher = Batcher(run, max_size=50)

    results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))

    assert results == [0, 10, 20, 30, 40]
    assert run.batches == [[0, 1, 2, 3, 4]]


async def test_calls_arriving_during_a_batch_form_the_next_one_up_to_max_size() -> None:
    run = Recorder()
    run.release.clear()
    batcher = Batcher(run, max_size=3)
    first = asyncio.ensure_future(batcher.submit(1))
    await run.started.wait()
    later = [asyncio.ensure_future(batcher.submit(i)) for i in range(2, 7)]
    await asyncio.sleep(0)
    run.release.set()

    assert await asyncio.gather(first, *later) == [10, 20, 30, 40, 50, 60]
    assert run.batches == [[1], [2, 3, 4], [5, 6]]


async def test_max_delay_holds_a_batch_open_for_calls_that_trickle_in() -> None:
    run = Recorder()
    batcher = Batcher(run, max_size=50, max_delay=0.2)

    async def trickle(item: int) -> int:
        await asyncio.sleep(item * 0.01)
        return await batcher.submit(item)

    assert await asyncio.gather(*(trickle(i) for i in range(4))) == [0, 10, 20, 30]
    assert run.batches == [[0, 1, 2, 3]]


async def test_a_full_batch_does_not_wait_for_max_delay() -> None:
    run = Recorder()
    batcher = Batcher(run, max_size=2, max_delay=30)

    assert await asyncio.wait_for(asyncio.gather(batcher.submit(1), batcher.submit(2)), 5) == [
        10,
        20,
    ]


async def test_a_failed_batch_fails_every_caller_and_the_next_batch_runs() -> None:
    run = Recorder()
    run.fail = RuntimeError("database gone")
    batcher = Batcher(run)

    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    run.fail = None

    assert [type(r) for r in results] == [RuntimeError] * 3
    assert await batcher.submit(4) == 40


async def test_results_of_callers_cancelled_mid_batch_are_handed_to_on_abandoned() -> None:
    run = Recorder()
    run.release.clear()
    abandoned: list[tuple[int, int]] = []

    async def on_abandoned(items: list[tuple[int, int]]) -> None:
        abandoned.extend(items)

    batcher = Batcher(run, on_abandoned=on_abandoned)
    kept, gone = batcher.submit(1), asyncio.ensure_future(batcher.submit(2))
    kept_task = asyncio.ensure_future(kept)
    await run.started.wait()
    gone.cancel()
    run.release.set()

    assert await kept_task == 10
    await batcher.close()
    assert abandoned == [(2, 20)]


async def test_a_caller_cancelled_before_its_batch_starts_is_left_out() -> None:
    run = Recorder()
    batcher = Batcher(run)
    gone = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0)
    gone.cancel()

    assert await batcher.submit(2) == 20
    assert run.batches == [[2]]


async def test_posted_items_go_in_the_batch_without_anyone_waiting_for_them() -> None:
    run = Recorder()
    batcher = Batcher(run, max_size=50)

    batcher.post(1)
    batcher.post(2)
    result = await batcher.submit(3)

    assert result == 30
    assert run.batches == [[1, 2, 3]]


async def test_a_failed_batch_of_posted_items_is_logged_not_raised() -> None:
    run = Recorder()
    run.fail = RuntimeError("queue gone")
    batcher = Batcher(run)

    batcher.post(1)
    await batcher.close()
    run.fail = None

    assert run.batches == [[1]]
    assert await batcher.submit(2) == 20


async def test_close_sends_a_batch_held_open_at_once() -> None:
    run = Recorder()
    batcher = Batcher(run, max_size=50, max_delay=30)
    batcher.post(1)
    await asyncio.sleep(0)  # the flusher is now holding the batch open

    await asyncio.wait_for(batcher.close(), 5)

    assert run.batches == [[1]]


async def test_every_full_batch_goes_to_one_call_when_asked_to() -> None:
    run = Recorder()
    batcher = Batcher(run, max_size=2, max_delay=30, batches_per_call=None)

    for item in range(5):
        batcher.post(item)
    while not run.batches:
        run.started.clear()
        await run.started.wait()
    await batcher.close()

    assert run.batches == [[0, 1, 2, 3], [4]]  # full batches at once, the rest on close


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_size must be at least 1, not 0"):
        Batcher(Recorder(), max_size=0)
