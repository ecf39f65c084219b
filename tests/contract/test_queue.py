"""The ``ports.Queue`` contract: every queue adapter passes this one suite.

To add an implementation (a faster SQS simulator, say), write a fixture that yields an
empty queue of that kind and closes it afterwards, and add the fixture's name to
``QUEUE_FIXTURES``. SQS-only behaviour (batch failures reported by id, error mapping on
the wire) is at the end, against moto.

Timing assertions are bounded with generous margins; the tests wait through the queue's
own long poll, never with sleeps.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from aiobotocore.session import get_session

from delivery_server.adapters.aws.session import AwsHttp
from delivery_server.adapters.aws.sqs import SqsQueue, open_sqs_queue
from delivery_server.adapters.queue_local import LocalQueue
from delivery_server.errors import PermanentError
from delivery_server.models import Delivery, QueueMessage
from delivery_server.ports import Queue
from tests.conftest import AWS_REGION

pytestmark = pytest.mark.timeout(60)

# Fixture names, one per implementation of ports.Queue; each yields an empty queue.
# The stand-in simulator runs the same contract: its SQS semantics are proven, not assumed.
# "sqs_queue" makes the calls the default way (DELIVERY_AWS_HTTP=direct), "sqs_queue_sdk"
# through aiobotocore's client (=sdk).
QUEUE_FIXTURES = ["local_queue", "sqs_queue", "sqs_queue_sdk", "sim_queue"]

LONG = 300  # a visibility timeout no test outlives


@pytest.fixture
def local_queue() -> LocalQueue:
    return LocalQueue()


@pytest.fixture
async def sqs_queue_url(moto: str) -> str:
    """A fresh standard queue in the moto server."""
    session = get_session()
    async with session.create_client("sqs", endpoint_url=moto, region_name=AWS_REGION) as sqs:
        response = await sqs.create_queue(QueueName="delivery-contract")
    return response["QueueUrl"]


@pytest.fixture
async def sqs_queue(moto: str, sqs_queue_url: str) -> AsyncIterator[SqsQueue]:
    async with open_sqs_queue(sqs_queue_url, endpoint_url=moto, region_name=AWS_REGION) as queue:
        yield queue


@pytest.fixture
async def sqs_queue_sdk(moto: str, sqs_queue_url: str) -> AsyncIterator[SqsQueue]:
    async with open_sqs_queue(
        sqs_queue_url, endpoint_url=moto, region_name=AWS_REGION, http="sdk"
    ) as queue:
        yield queue


@pytest.fixture(params=QUEUE_FIXTURES)
def queue(request: pytest.FixtureRequest) -> Queue:
    """Each implementation in turn."""
    implementation: Queue = request.getfixturevalue(request.param)
    return implementation


@pytest.fixture(params=["sqs_queue", "sqs_queue_sdk", "sim_queue"])
def any_sqs_queue(request: pytest.FixtureRequest) -> SqsQueue:
    """The SQS adapter on moto (both ways), then on the simulator (SQS-only behaviour)."""
    implementation: SqsQueue = request.getfixturevalue(request.param)
    return implementation


def message(email_id: int, job_id: int = 7) -> QueueMessage:
    return QueueMessage(email_id=email_id, job_id=job_id)


def email_ids(deliveries: list[Delivery]) -> list[int]:
    return sorted(QueueMessage.from_body(d.body).email_id for d in deliveries)


async def receive_n(
    queue: Queue, count: int, *, visibility: int = LONG, within: float = 15.0
) -> list[Delivery]:
    """Receive until ``count`` messages arrived; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    got: list[Delivery] = []
    while len(got) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"received {len(got)} of {count} messages within {within}s")
        got += await queue.receive(10, wait_seconds=1, visibility_timeout=visibility)
    return got


async def test_round_trip_keeps_the_design_body(queue: Queue) -> None:
    assert await queue.publish([message(42, job_id=7)]) == set()

    [delivery] = await receive_n(queue, 1)

    assert json.loads(delivery.body) == {"v": 1, "email_id": 42, "job_id": 7}
    assert QueueMessage.from_body(delivery.body) == message(42, job_id=7)
    assert delivery.receive_count == 1
    assert delivery.receipt


async def test_publish_and_delete_more_than_one_batch(queue: Queue) -> None:
    assert await queue.publish([message(i) for i in range(1, 26)]) == set()

    got = await receive_n(queue, 25)
    assert email_ids(got) == list(range(1, 26))

    await queue.delete([d.receipt for d in got])
    # A message that still existed would show up again; a deleted one cannot.
    await asyncio.gather(*(queue.change_visibility(d.receipt, 0) for d in got))
    assert await queue.receive(10, wait_seconds=1, visibility_timeout=LONG) == []
    assert await queue.backlog() == 0


async def test_receive_returns_at_most_max_messages(queue: Queue) -> None:
    await queue.publish([message(i) for i in range(1, 6)])

    got = await queue.receive(2, wait_seconds=5, visibility_timeout=LONG)

    assert 1 <= len(got) <= 2


async def test_visibility_timeout_hides_then_redelivers(queue: Queue) -> None:
    await queue.publish([message(1)])
    [first] = await queue.receive(10, wait_seconds=5, visibility_timeout=1)
    assert await queue.receive(10, wait_seconds=0, visibility_timeout=LONG) == []

    [again] = await receive_n(queue, 1)

    assert again.body == first.body
    assert again.receive_count == 2
    assert again.receipt != first.receipt


async def test_long_poll_wakes_when_visibility_expires(queue: Queue) -> None:
    await queue.publish([message(1)])
    [first] = await queue.receive(10, wait_seconds=5, visibility_timeout=2)
    hidden_at = time.monotonic()

    got = await queue.receive(10, wait_seconds=10, visibility_timeout=LONG)

    waited = time.monotonic() - hidden_at
    assert [d.body for d in got] == [first.body]
    assert 1.5 <= waited < 8


async def test_change_visibility_to_zero_shows_the_message_at_once(queue: Queue) -> None:
    await queue.publish([message(1)])
    [first] = await queue.receive(10, wait_seconds=5, visibility_timeout=LONG)
    assert await queue.receive(10, wait_seconds=0, visibility_timeout=LONG) == []

    await queue.change_visibility(first.receipt, 0)

    [again] = await receive_n(queue, 1, within=5)
    assert again.body == first.body
    assert again.receive_count == 2


async def test_delete_removes_only_the_given_message(queue: Queue) -> None:
    await queue.publish([message(1), message(2)])
    got = await receive_n(queue, 2)
    by_id = {QueueMessage.from_body(d.body).email_id: d for d in got}

    await queue.delete([by_id[1].receipt])
    for delivery in got:
        await queue.change_visibility(delivery.receipt, 0)

    [left] = await receive_n(queue, 1, within=5)
    assert QueueMessage.from_body(left.body).email_id == 2
    assert await queue.receive(10, wait_seconds=1, visibility_timeout=LONG) == []


async def test_stale_receipts_are_harmless(queue: Queue) -> None:
    await queue.publish([message(1)])
    [delivery] = await queue.receive(10, wait_seconds=5, visibility_timeout=LONG)
    await queue.delete([delivery.receipt])

    # The message is gone: settling it again, or with nonsense, changes nothing.
    await queue.delete([delivery.receipt, delivery.receipt])
    await queue.change_visibility(delivery.receipt, 0)
    await queue.change_visibility(delivery.receipt, 30)
    await queue.delete(["not-a-receipt"])
    await queue.change_visibility("not-a-receipt", 0)

    assert await queue.receive(10, wait_seconds=1, visibility_timeout=LONG) == []
    assert await queue.backlog() == 0


async def test_receipt_of_an_earlier_receive_does_not_raise(queue: Queue) -> None:
    await queue.publish([message(1)])
    [first] = await queue.receive(10, wait_seconds=5, visibility_timeout=0)
    [second] = await receive_n(queue, 1)
    assert second.receipt != first.receipt

    # SQS may or may not act on an outdated receipt; either way it must not fail.
    await queue.change_visibility(first.receipt, 0)
    await queue.delete([first.receipt])
    await queue.delete([second.receipt])

    assert await queue.backlog() == 0


async def test_backlog_counts_visible_messages(queue: Queue) -> None:
    assert await queue.backlog() == 0
    await queue.publish([message(i) for i in range(1, 4)])
    assert await queue.backlog() == 3

    [delivery] = await queue.receive(1, wait_seconds=5, visibility_timeout=LONG)
    assert await queue.backlog() == 2

    await queue.delete([delivery.receipt])
    assert await queue.backlog() == 2


async def test_depth_counts_visible_and_in_flight_messages(queue: Queue) -> None:
    assert await queue.depth() == 0
    await queue.publish([message(i) for i in range(1, 4)])
    assert await queue.depth() == 3

    [first] = await queue.receive(1, wait_seconds=5, visibility_timeout=LONG)
    assert (await queue.backlog(), await queue.depth()) == (2, 3)  # one in flight

    await queue.change_visibility(first.receipt, LONG)  # retried later: still held
    assert await queue.depth() == 3

    await queue.delete([first.receipt])
    assert await queue.depth() == 2

    rest = await receive_n(queue, 2)
    assert (await queue.backlog(), await queue.depth()) == (0, 2)  # all in flight
    await queue.delete([d.receipt for d in rest])
    assert await queue.depth() == 0


async def test_long_poll_returns_early_when_a_message_arrives(queue: Queue) -> None:
    waiting = asyncio.create_task(queue.receive(10, wait_seconds=15, visibility_timeout=LONG))
    try:
        # One empty second proves the queue is empty and gives the first poll time to start.
        assert await queue.receive(10, wait_seconds=1, visibility_timeout=LONG) == []
        assert not waiting.done()
        published_at = time.monotonic()

        await queue.publish([message(5)])
        got = await asyncio.wait_for(waiting, timeout=14)
    finally:
        waiting.cancel()

    assert email_ids(got) == [5]
    assert time.monotonic() - published_at < 5


async def test_receive_on_an_empty_queue_waits_then_returns_nothing(queue: Queue) -> None:
    started = time.monotonic()

    assert await queue.receive(10, wait_seconds=1, visibility_timeout=LONG) == []

    assert 0.9 <= time.monotonic() - started < 5


# -- SQS only ----------------------------------------------------------------------------


async def test_sqs_reports_refused_entries_by_email_id(sqs_queue: SqsQueue) -> None:
    # QueueMessage bodies are too small to be refused; an out-of-range delay is refused
    # per entry by SQS, which exercises the same "Failed" path of SendMessageBatch.
    failed = await sqs_queue._send_batch(
        [
            {"Id": "1", "MessageBody": message(1).to_body()},
            {"Id": "2", "MessageBody": message(2).to_body(), "DelaySeconds": 901},
        ]
    )

    assert failed == {2}
    assert email_ids(await receive_n(sqs_queue, 1)) == [1]


async def test_sqs_depth_counts_delayed_messages_too(any_sqs_queue: SqsQueue) -> None:
    queue = any_sqs_queue
    # The adapter never delays a message, but a queue's DelaySeconds (or another
    # producer) can: a delayed message is held, neither visible nor in flight.
    delayed = {"Id": "1", "MessageBody": message(1).to_body(), "DelaySeconds": 600}
    assert await queue._send_batch([delayed]) == set()
    await queue.publish([message(2), message(3)])
    assert await queue.receive(1, wait_seconds=5, visibility_timeout=LONG)

    # One visible, one in flight, one delayed.
    assert (await queue.backlog(), await queue.depth()) == (1, 3)


@pytest.mark.parametrize("http", ["direct", "sdk"])
async def test_sqs_publish_to_a_missing_queue_fails_every_email(moto: str, http: AwsHttp) -> None:
    url = f"{moto}/123456789012/no-such-queue"
    async with open_sqs_queue(url, endpoint_url=moto, region_name=AWS_REGION, http=http) as queue:
        failed = await queue.publish([message(i) for i in range(1, 13)])

        assert failed == set(range(1, 13))
        with pytest.raises(PermanentError, match="NonExistentQueue"):
            await queue.backlog()
        with pytest.raises(PermanentError, match="NonExistentQueue"):
            await queue.depth()
        with pytest.raises(PermanentError):
            await queue.receive(10, wait_seconds=0, visibility_timeout=LONG)
