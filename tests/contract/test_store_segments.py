"""What a send was billed as (issue 15): ``mark_sent``'s ``segments`` written in the send
records' batch (``delivery_email.segments``), an sms job's own cap read back at the
claim, on MariaDB and SQLite (``conftest``'s store fixtures)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from delivery_server.adapters.store_sql import SqlStore
from delivery_server.models import utcnow
from tests.contract.test_store import email_row, processing_job, queue_all

pytestmark = pytest.mark.timeout(60)


async def test_a_batch_of_sends_records_each_ones_segments_and_none_for_uncounted(
    store: SqlStore, raw: AsyncEngine
) -> None:
    job, ids = await processing_job(store, 3)
    await queue_all(store, job.id)
    for email_id in ids:
        await store.claim(email_id, 600)
    # Submitted together: one batch, one UPDATE, a count per email and one uncounted.
    await asyncio.gather(
        store.mark_sent(ids[0], "m-0", utcnow(), None, 2),
        store.mark_sent(ids[1], "m-1", utcnow(), None, 7),
        store.mark_sent(ids[2], "m-2", utcnow()),
    )
    rows = [await email_row(raw, email_id) for email_id in ids]
    assert [(row["status"], row["segments"]) for row in rows] == [
        ("sent", 2),
        ("sent", 7),
        ("sent", None),
    ]


async def test_a_late_confirmation_without_a_count_keeps_the_recorded_one(
    store: SqlStore, raw: AsyncEngine
) -> None:
    """SES-style confirmations (the tracker's, or a repeat) name no segments: an email's
    recorded count stays."""
    job, (email_id,) = await processing_job(store, 1)
    await queue_all(store, job.id)
    await store.claim(email_id, 10)
    assert await store.expire_leases(utcnow() + timedelta(seconds=60)) == 1
    await store.mark_sent(email_id, "m-late", utcnow(), None, 3)  # unknown → sent
    assert (await email_row(raw, email_id))["segments"] == 3


async def test_an_sms_jobs_cap_is_stored_and_claimed_with_its_emails(store: SqlStore) -> None:
    job, (email_id,) = await processing_job(store, 1, channel="sms", max_segments=2)
    assert (await store.job(job.id)).max_segments == 2
    await queue_all(store, job.id)
    claimed = (await store.claim(email_id, 600)).claimed
    assert claimed is not None
    assert claimed.job.max_segments == 2
    other, _ = await processing_job(store, 1)
    assert (await store.job(other.id)).max_segments is None
