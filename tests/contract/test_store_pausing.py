"""``unqueue_paused`` on MariaDB and SQLite (issue 11 §7): a paused job's queued email goes
back to ``pending`` so its message can be dropped; never one of a job that is processing
again, never one that is not queued."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from delivery_server.adapters.store_sql import SqlStore
from delivery_server.models import (
    ClaimOutcome,
    EmailStatus,
    JobStatus,
    NewEmail,
    QueueMessage,
    utcnow,
)

pytestmark = pytest.mark.timeout(60)


async def queued_job(store: SqlStore, count: int) -> tuple[int, list[int]]:
    created = await store.create_job("statements", "statement", "bank@example.com")
    await store.add_emails(created.id, (NewEmail(f"c{i}@example.com", {}) for i in range(count)))
    await store.set_job_status(created.id, JobStatus.PROCESSING)
    ids: list[int] = []

    async def publish(messages: Sequence[QueueMessage]) -> set[int]:
        ids.extend(m.email_id for m in messages)
        return set()

    await store.publish_pending(created.id, 1000, publish)
    return created.id, ids


async def test_a_paused_jobs_queued_emails_go_back_to_pending_and_are_published_on_resume(
    store: SqlStore,
) -> None:
    job_id, ids = await queued_job(store, 30)
    await store.pause_job(job_id, "reputation brake: bounce rate 6.0%")  # the brake's pause
    assert (await store.claim(ids[0], 60)).outcome is ClaimOutcome.JOB_PAUSED
    # Concurrent callers (one consumer's burst) are answered each, in one transaction.
    assert all(await asyncio.gather(*(store.unqueue_paused(i) for i in ids)))
    counts = (await store.job_summary(job_id)).counts
    assert (counts[EmailStatus.PENDING], counts[EmailStatus.QUEUED]) == (30, 0)
    # A duplicate message of an email already back to pending: dropped by its claim.
    assert await store.unqueue_paused(ids[0]) is True
    assert (await store.claim(ids[0], 60)).outcome is ClaimOutcome.NOT_QUEUED
    # Nothing is published while the job stays paused, everything once it resumes.
    published: list[int] = []

    async def publish(messages: Sequence[QueueMessage]) -> set[int]:
        published.extend(m.email_id for m in messages)
        return set()

    assert await store.publish_pending(job_id, 1000, publish) == 0
    await store.set_job_status(job_id, JobStatus.PROCESSING, [JobStatus.PAUSED])
    assert job_id in [j.id for j in await store.due_jobs(utcnow())]
    assert await store.publish_pending(job_id, 1000, publish) == 30
    assert sorted(published) == ids


async def test_a_resume_that_came_first_keeps_the_email_queued(store: SqlStore) -> None:
    job_id, ids = await queued_job(store, 2)
    await store.set_job_status(job_id, JobStatus.PAUSED)
    await store.set_job_status(job_id, JobStatus.PROCESSING)
    assert await store.unqueue_paused(ids[0]) is False  # the consumer claims it again
    assert (await store.claim(ids[0], 60)).outcome is ClaimOutcome.CLAIMED
    # Claimed (sending) or sent emails of a paused job stay as they are.
    await store.set_job_status(job_id, JobStatus.PAUSED)
    assert await store.unqueue_paused(ids[0]) is False
    counts = (await store.job_summary(job_id)).counts
    assert (counts[EmailStatus.SENDING], counts[EmailStatus.QUEUED]) == (1, 1)
    assert await store.unqueue_paused(ids[-1] + 1000) is False  # no such email
