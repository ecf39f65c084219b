"""The pipeline's contract, once per channel (issue 15): claim, attempts, permanent
failures, restart, pause, shutdown during a send and an unanswered send (``unknown``),
and a bad recipient value that fails alone. The channel's provider is steered by
``channels.Behaviour``; the store is real (MariaDB and SQLite), the queue in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from delivery_server.adapters.queue_local import LocalQueue
from delivery_server.adapters.store_sql import SqlStore, upgrade_schema
from delivery_server.channels import Channel, Channels
from delivery_server.email_listing import EmailFilter
from delivery_server.errors import PermanentError, RetryableError
from delivery_server.metrics import Metrics
from delivery_server.models import (
    EmailStatus,
    JobStatus,
    NewEmail,
    QueueMessage,
    Template,
    utcnow,
)
from delivery_server.pipeline import Pipeline, PipelinePolicy
from delivery_server.settlement import Settlements
from tests.contract.channels import (
    CHANNEL_CASES,
    HANG,
    OK,
    PERMANENT,
    RETRY,
    Behaviour,
    ChannelCase,
)
from tests.contract.drop_channels import DROP_CASES

LEASE_SECONDS = 30

pytestmark = pytest.mark.timeout(60)
SEND_TIMEOUT = 0.5
TEMPLATE = Template(
    "notice", "en", 0, "Notice for {{ name }}", "Dear {{ name }}", None, sms_body="Dear {{ name }}"
)


@dataclass
class Rig:
    store: SqlStore
    queue: LocalQueue
    pipeline: Pipeline
    behaviour: Behaviour
    case: ChannelCase
    metrics: Metrics

    async def job(self, count: int, *, bad: Sequence[str] = ()) -> tuple[int, list[int]]:
        """A processing job of ``count`` recipients (plus ``bad`` values, inserted as an
        upstream system would, past the import's checks), published."""
        job = await self.store.create_job(
            "notices", "notice", "bank@example.com", channel=self.case.name, target=self.case.target
        )
        values = [self.case.recipient(n) for n in range(count)] + list(bad)
        await self.store.add_emails(
            job.id, [NewEmail(v, {"name": f"n{i}"}) for i, v in enumerate(values)]
        )
        await self.store.set_job_status(job.id, JobStatus.PROCESSING)
        return job.id, await self.publish(job.id)

    async def publish(self, job_id: int) -> list[int]:
        ids: list[int] = []

        async def publish(messages: Sequence[QueueMessage]) -> set[int]:
            ids.extend(m.email_id for m in messages)
            return await self.queue.publish(messages)

        await self.store.publish_pending(job_id, 1000, publish)
        return ids

    async def drain(self) -> None:
        """Handle messages until none is visible."""
        while deliveries := await self.queue.receive(50, 0.05, 30):
            await asyncio.gather(*(self.pipeline.handle(d) for d in deliveries))

    async def statuses(self, job_id: int) -> dict[EmailStatus, int]:
        counts = (await self.store.job_summary(job_id)).counts
        return {status: n for status, n in counts.items() if n}


@pytest.fixture(params=["sqlite_url", "mariadb_url"])
def store_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(request.param)
    return url


CASES = [*CHANNEL_CASES, *DROP_CASES]


@contextlib.asynccontextmanager
async def _rig(
    request: pytest.FixtureRequest,
    store_url: str,
    opened: Callable[[contextlib.AsyncExitStack, ChannelCase, Behaviour], Awaitable[Channels]],
) -> AsyncIterator[Rig]:
    case: ChannelCase = request.param
    await upgrade_schema(store_url)
    store = await SqlStore.connect(store_url, pool_size=5)
    await store.add_template(TEMPLATE)
    queue = LocalQueue()
    settlements = Settlements(queue)
    provider = request.getfixturevalue(case.provider) if case.provider else None
    behaviour = Behaviour(provider=provider)
    metrics = Metrics()
    try:
        async with contextlib.AsyncExitStack() as stack:
            pipeline = Pipeline(
                store,
                settlements,
                await opened(stack, case, behaviour),
                metrics,
                PipelinePolicy(lease_seconds=LEASE_SECONDS, max_attempts=3, retry_base_delay=0),
            )
            yield Rig(store, queue, pipeline, behaviour, case, metrics)
    finally:
        await settlements.close()
        await store.close()


@pytest.fixture(params=CASES, ids=lambda case: case.name)
async def rig(request: pytest.FixtureRequest, store_url: str) -> AsyncIterator[Rig]:
    async def opened(
        stack: contextlib.AsyncExitStack, case: ChannelCase, behaviour: Behaviour
    ) -> Channels:
        return Channels([await stack.enter_async_context(case.open(behaviour, SEND_TIMEOUT))])

    async with _rig(request, store_url, opened) as rig:
        yield rig


@dataclass
class Openings:
    """How often the lazy rig's channel was opened, and what the next openings raise."""

    count: int = 0
    failures: list[Exception] = field(default_factory=list)


@pytest.fixture
def openings() -> Openings:
    return Openings()


@pytest.fixture(params=CASES, ids=lambda case: case.name)
async def lazy_rig(
    request: pytest.FixtureRequest, store_url: str, openings: Openings
) -> AsyncIterator[Rig]:
    """The rig's channel not open at first: the first email of its job opens it, as a
    server opens every channel but email (``app.channels``)."""

    async def opened(
        stack: contextlib.AsyncExitStack, case: ChannelCase, behaviour: Behaviour
    ) -> Channels:
        async def open_channel() -> Channel[Any]:
            openings.count += 1
            if openings.failures:
                raise openings.failures.pop(0)
            return await stack.enter_async_context(case.open(behaviour, SEND_TIMEOUT))

        channels = Channels([], {case.name: open_channel})
        stack.push_async_callback(channels.aclose)
        return channels

    async with _rig(request, store_url, opened) as rig:
        yield rig


def channel_count(metrics: Metrics, channel: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "delivery_channel_attempts_total", {"channel": channel, "outcome": outcome}
    )
    return value or 0.0


async def test_every_email_is_sent_once_and_a_duplicate_message_sends_nothing(rig: Rig) -> None:
    job_id, ids = await rig.job(5)
    await rig.queue.publish([QueueMessage(ids[0], job_id)])  # a duplicate, as SQS may
    await rig.drain()
    assert sorted(rig.behaviour.delivered) == sorted(ids)
    assert await rig.statuses(job_id) == {EmailStatus.SENT: 5}
    assert channel_count(rig.metrics, rig.case.name, "sent") == 5
    rows = await rig.store.email_page(job_id, EmailFilter(), limit=10)
    assert [row.segments for row in rows] == [rig.case.segments] * 5


async def test_a_retryable_failure_costs_an_attempt_then_fails_after_the_last(rig: Rig) -> None:
    rig.behaviour.mode = RETRY
    job_id, _ = await rig.job(1)
    await rig.drain()
    assert await rig.statuses(job_id) == {EmailStatus.FAILED: 1}
    assert rig.behaviour.delivered == []
    assert channel_count(rig.metrics, rig.case.name, "retry") == 2
    assert channel_count(rig.metrics, rig.case.name, "failed") == 1


async def test_a_permanent_failure_fails_at_once_and_restart_sends_it(rig: Rig) -> None:
    rig.behaviour.mode = PERMANENT
    job_id, ids = await rig.job(2)
    await rig.drain()
    assert await rig.statuses(job_id) == {EmailStatus.FAILED: 2}
    assert channel_count(rig.metrics, rig.case.name, "retry") == 0
    assert await rig.store.restart_failed([job_id], transient_only=True) == 0  # permanent
    rig.behaviour.mode = OK
    assert await rig.store.restart_failed([job_id]) == 2
    await rig.publish(job_id)
    await rig.drain()
    assert await rig.statuses(job_id) == {EmailStatus.SENT: 2}
    assert sorted(rig.behaviour.delivered) == sorted(ids)


async def test_an_unanswered_send_becomes_unknown_and_is_not_resent(rig: Rig) -> None:
    rig.behaviour.mode = HANG
    job_id, ids = await rig.job(1)
    await rig.drain()
    if rig.case.idempotent:  # a drop puts the same bytes again: retried, never unknown
        assert await rig.statuses(job_id) == {EmailStatus.FAILED: 1}
        assert channel_count(rig.metrics, rig.case.name, "retry") == 2
        assert channel_count(rig.metrics, rig.case.name, "unknown") == 0
        return
    assert await rig.statuses(job_id) == {EmailStatus.UNKNOWN: 1}
    rig.behaviour.mode = OK
    await rig.queue.publish([QueueMessage(ids[0], job_id)])  # a late duplicate
    await rig.drain()
    assert rig.behaviour.delivered == []
    assert channel_count(rig.metrics, rig.case.name, "unknown") == 1


async def test_shutdown_during_a_send_makes_it_unknown(rig: Rig) -> None:
    rig.behaviour.mode = HANG
    job_id, _ = await rig.job(1)
    (delivery,) = await rig.queue.receive(1, 1, 30)
    handling = asyncio.create_task(rig.pipeline.handle(delivery))
    await asyncio.wait_for(rig.behaviour.hanging.wait(), 10)
    handling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handling
    assert await rig.statuses(job_id) == {EmailStatus.UNKNOWN: 1}


async def test_a_process_killed_during_a_send_leaves_it_unknown_and_never_resent(
    rig: Rig,
) -> None:
    """kill -9: nothing of the process settles anything; its lease runs out and the
    reconciler's pass makes the email ``unknown`` (the send may have happened), for every
    channel alike; a redelivered message then sends nothing."""
    rig.behaviour.mode = HANG
    job_id, ids = await rig.job(1)
    (delivery,) = await rig.queue.receive(1, 1, 30)
    killed = asyncio.create_task(rig.pipeline.handle(delivery))
    await asyncio.wait_for(rig.behaviour.hanging.wait(), 10)
    try:
        # The dead process's handler never runs again: only the lease is left.
        past_the_lease = utcnow() + timedelta(seconds=LEASE_SECONDS + 1)
        assert await rig.store.expire_leases(past_the_lease) == 1
        assert await rig.statuses(job_id) == {EmailStatus.UNKNOWN: 1}
        rig.behaviour.mode = OK
        await rig.queue.publish([QueueMessage(ids[0], job_id)])
        await rig.drain()
        assert rig.behaviour.delivered == []
        assert await rig.statuses(job_id) == {EmailStatus.UNKNOWN: 1}
    finally:
        killed.cancel()
        await asyncio.gather(killed, return_exceptions=True)


async def test_a_paused_jobs_messages_send_nothing_until_it_resumes(rig: Rig) -> None:
    job_id, ids = await rig.job(3)
    await rig.store.set_job_status(job_id, JobStatus.PAUSED)
    await rig.drain()
    assert rig.behaviour.delivered == []
    assert await rig.statuses(job_id) == {EmailStatus.PENDING: 3}
    await rig.store.set_job_status(job_id, JobStatus.PROCESSING)
    await rig.publish(job_id)
    await rig.drain()
    assert sorted(rig.behaviour.delivered) == sorted(ids)


async def test_a_bad_recipient_value_fails_alone_and_permanently(rig: Rig) -> None:
    job_id, _ = await rig.job(3, bad=[rig.case.bad_recipient])
    await rig.drain()
    assert await rig.statuses(job_id) == {EmailStatus.SENT: 3, EmailStatus.FAILED: 1}
    assert len(rig.behaviour.delivered) == 3
    (group,) = (await rig.store.job_summary(job_id)).error_groups
    assert (group.count, group.error_class.startswith("PermanentError")) == (1, True)


async def drain_until(rig: Rig, job_id: int, expected: dict[EmailStatus, int]) -> None:
    """Handle messages until the job's emails are as expected (an email sent back while
    its channel opens, or after a retryable failure, comes back later)."""
    while await rig.statuses(job_id) != expected:
        await rig.drain()


async def test_the_first_emails_of_a_job_open_its_channel_once(
    lazy_rig: Rig, openings: Openings
) -> None:
    job_id, ids = await lazy_rig.job(5)
    await drain_until(lazy_rig, job_id, {EmailStatus.SENT: 5})
    assert sorted(lazy_rig.behaviour.delivered) == sorted(ids)
    assert openings.count == 1
    assert channel_count(lazy_rig.metrics, lazy_rig.case.name, "sent") == 5


async def test_an_opening_that_fails_is_that_emails_error_and_the_next_opens_again(
    lazy_rig: Rig, openings: Openings
) -> None:
    openings.failures = [
        PermanentError(f"channel {lazy_rig.case.name!r} could not be opened: bad setting"),
        RetryableError(f"channel {lazy_rig.case.name!r} could not be opened: unreachable"),
    ]
    job_id, ids = await lazy_rig.job(1)
    await drain_until(lazy_rig, job_id, {EmailStatus.FAILED: 1})
    failed = (await lazy_rig.store.email_page(job_id, EmailFilter(), limit=1))[0]
    assert "could not be opened: bad setting" in (failed.last_error or "")
    # The next job's email: one attempt lost to the transient cause, then sent.
    job_id, ids = await lazy_rig.job(1)
    await drain_until(lazy_rig, job_id, {EmailStatus.SENT: 1})
    assert lazy_rig.behaviour.delivered == ids
    assert openings.count == 3
    sent = (await lazy_rig.store.email_page(job_id, EmailFilter(), limit=1))[0]
    assert sent.attempts == 2
