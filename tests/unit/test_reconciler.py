"""The reconciler's republishing of stale queued emails: no more than the queue's depth
says can have lost their message, oldest first, nothing when the depth is unknown.

Real components: the SQL store on SQLite and the in-process queue, whose depth is exact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from structlog.testing import capture_logs

from delivery_server.adapters.queue_local import LocalQueue
from delivery_server.adapters.store_sql import SqlStore, upgrade_schema
from delivery_server.adapters.store_sql.schema import email as email_table
from delivery_server.errors import RetryableError
from delivery_server.heartbeats import Heartbeats
from delivery_server.metrics import Metrics
from delivery_server.models import Job, JobStatus, NewEmail, QueueMessage, utcnow
from delivery_server.reconciler import Reconciler, surely_lost

pytestmark = pytest.mark.timeout(60)

REQUEUE_AFTER = 900.0
LONG = 300


class UnreadableDepthQueue(LocalQueue):
    """The in-process queue, except that its depth cannot be read (SQS unreachable)."""

    async def depth(self) -> int:
        raise RetryableError("SQS GetQueueAttributes failed: EndpointConnectionError")


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[SqlStore]:
    await upgrade_schema(sqlite_url)
    opened = await SqlStore.connect(sqlite_url, pool_size=2)
    yield opened
    await opened.close()


def reconciler(store: SqlStore, queue: LocalQueue) -> Reconciler:
    return Reconciler(
        store, queue, Metrics(), Heartbeats(), interval=30.0, requeue_after=REQUEUE_AFTER
    )


async def queued_job(store: SqlStore, count: int) -> tuple[Job, list[int]]:
    """A processing job whose ``count`` emails are all ``queued`` (their messages went
    nowhere: each test fills the queue itself). Returns the job and its email ids."""
    job = await store.create_job("statements", "statement", "bank@example.com")
    await store.add_emails(job.id, (NewEmail(f"c{i}@example.com", {}) for i in range(count)))
    job = await store.set_job_status(job.id, JobStatus.PROCESSING)
    sink: list[int] = []

    async def publish(messages: Sequence[QueueMessage]) -> set[int]:
        sink.extend(m.email_id for m in messages)
        return set()

    assert await store.publish_pending(job.id, 10_000, publish) == count
    return job, sink


async def age(store: SqlStore, ages: dict[int, timedelta]) -> None:
    """Make each email look untouched for its age."""
    now = utcnow()

    async def write(conn: AsyncConnection) -> None:
        for email_id, untouched_for in ages.items():
            await conn.execute(
                sa.update(email_table)
                .where(email_table.c.id == email_id)
                .values(updated_at=now - untouched_for)
            )

    await store._db.run(write)


async def stale_count(store: SqlStore) -> int:
    """How many queued emails the reconciler would call stale now (untouched rows stay)."""
    _, stale = await store.count_queued(utcnow() - timedelta(seconds=REQUEUE_AFTER))
    return stale


async def drain(queue: LocalQueue) -> list[int]:
    """Receive and delete every message; return their email ids."""
    ids: list[int] = []
    while deliveries := await queue.receive(1000, wait_seconds=0, visibility_timeout=LONG):
        ids += [QueueMessage.from_body(d.body).email_id for d in deliveries]
        await queue.delete([d.receipt for d in deliveries])
    return ids


def events(logs: Sequence[Mapping[str, Any]], level: str) -> list[str]:
    return [str(entry["event"]) for entry in logs if entry["log_level"] == level]


def test_queued_emails_beyond_the_queue_depth_are_surely_lost() -> None:
    assert surely_lost(queued=100, depth=100) == 0
    assert surely_lost(queued=100, depth=40) == 60
    assert surely_lost(queued=100, depth=250) == 0  # duplicates, undeleted messages
    assert surely_lost(queued=0, depth=0) == 0


async def test_stale_emails_whose_messages_are_all_in_the_queue_are_left_alone(
    store: SqlStore,
) -> None:
    job, ids = await queued_job(store, 100)
    await age(store, dict.fromkeys(ids, timedelta(hours=1)))
    queue = LocalQueue()
    await queue.publish([QueueMessage(i, job.id) for i in ids])  # still waiting their turn

    with capture_logs() as logs:
        await reconciler(store, queue).reconcile_once()

    assert await queue.depth() == 100  # nothing published again
    assert await stale_count(store) == 100  # and no row touched
    assert events(logs, "warning") == []
    [info] = [entry for entry in logs if entry["log_level"] == "info"]
    assert info == {
        "event": "stale_queued_emails_still_in_queue",
        "log_level": "info",
        "stale_emails": 100,
        "queued_emails": 100,
        "queue_depth": 100,
        "republishing_at_most": 0,
    }


async def test_only_as_many_as_the_queue_lacks_are_republished_oldest_first(
    store: SqlStore,
) -> None:
    job, ids = await queued_job(store, 100)
    # The highest ids are the oldest: the order is by age, not by id.
    await age(store, {i: timedelta(hours=1, seconds=i) for i in ids})
    queue = LocalQueue()
    await queue.publish([QueueMessage(i, job.id) for i in range(-40, 0)])  # depth 40

    with capture_logs() as logs:
        await reconciler(store, queue).reconcile_once()

    republished = [i for i in await drain(queue) if i > 0]
    assert sorted(republished) == ids[-60:]
    assert await stale_count(store) == 40  # the 60 republished were touched, no other
    assert events(logs, "warning") == ["queued_emails_republished"]
    assert [e["emails"] for e in logs if e["event"] == "queued_emails_republished"] == [60]
    assert events(logs, "info") == ["stale_queued_emails_still_in_queue"]


async def test_stale_emails_are_republished_once_the_queue_has_drained(
    store: SqlStore,
) -> None:
    job, ids = await queued_job(store, 100)
    await age(store, dict.fromkeys(ids, timedelta(hours=1)))
    queue = LocalQueue()
    # Messages of emails already sent but not yet deleted hide that 30 were lost.
    await queue.publish([QueueMessage(i, job.id) for i in ids[30:] + list(range(-30, 0))])
    pass_ = reconciler(store, queue)
    assert await pass_.republish_stale(REQUEUE_AFTER) == 0

    await drain(queue)  # the consumers caught up: the queue is empty

    assert await pass_.republish_stale(REQUEUE_AFTER) == 100
    assert sorted(await drain(queue)) == ids


async def test_emails_that_are_not_stale_yet_are_never_republished(store: SqlStore) -> None:
    _, ids = await queued_job(store, 100)
    await age(store, dict.fromkeys(ids[:30], timedelta(hours=1)))
    queue = LocalQueue()

    assert await reconciler(store, queue).republish_stale(REQUEUE_AFTER) == 30

    assert sorted(await drain(queue)) == ids[:30]
    assert await stale_count(store) == 0


async def test_nothing_is_republished_when_the_queue_depth_cannot_be_read(
    store: SqlStore,
) -> None:
    _, ids = await queued_job(store, 100)
    await age(store, dict.fromkeys(ids, timedelta(hours=1)))
    queue = UnreadableDepthQueue()

    with capture_logs() as logs:
        await reconciler(store, queue).reconcile_once()

    assert await queue.backlog() == 0
    assert await stale_count(store) == 100
    [warning] = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warning["event"] == "republish_skipped_queue_depth_unknown"
    assert warning["stale_emails"] == 100


async def test_at_start_an_empty_in_process_queue_gets_every_queued_email_once(
    store: SqlStore,
) -> None:
    # More than one batch: the pass must neither stop after the first batch nor pick the
    # rows it has just touched again (it once did, forever, with every cutoff moving on).
    _, ids = await queued_job(store, 1_234)
    queue = LocalQueue()

    assert await reconciler(store, queue).republish_stale(0) == 1_234

    assert sorted(await drain(queue)) == ids


async def test_nothing_stale_costs_no_queue_call(store: SqlStore) -> None:
    await queued_job(store, 10)  # just published: not stale
    queue = UnreadableDepthQueue()

    with capture_logs() as logs:
        assert await reconciler(store, queue).republish_stale(REQUEUE_AFTER) == 0

    assert logs == []
