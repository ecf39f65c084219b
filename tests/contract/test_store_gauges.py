"""The database gauges' counts (``store_sql.gauges``): the email gauges cover the jobs in
flight and those finished lately, and a job is counted anew whenever it changes.

Same fixtures as ``test_store.py``: every test gets a freshly migrated database of each
backend (SQLite, MariaDB).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from delivery_server.adapters.store_sql import SqlStore
from delivery_server.adapters.store_sql.schema import email as email_table
from delivery_server.adapters.store_sql.schema import job as job_table
from delivery_server.models import EmailStatus, JobStatus, NewEmail, utcnow
from tests.contract.test_store import processing_job


async def _set(
    raw: AsyncEngine, job_id: int, status: JobStatus, finished_at: datetime | None
) -> None:
    async with raw.begin() as conn:
        await conn.execute(
            sa.update(job_table)
            .where(job_table.c.id == job_id)
            .values(status=status, finished_at=finished_at)
        )


async def _emails_to(raw: AsyncEngine, job_id: int, status: EmailStatus) -> None:
    async with raw.begin() as conn:
        await conn.execute(
            sa.update(email_table).where(email_table.c.job_id == job_id).values(status=status)
        )


async def test_email_gauge_counts_jobs_in_flight_and_lately_finished(
    store: SqlStore, raw: AsyncEngine
) -> None:
    await processing_job(store, 2)
    paused, _ = await processing_job(store, 3)
    recent, _ = await processing_job(store, 4)
    old, _ = await processing_job(store, 5)
    draft = await store.create_job("draft", "statement", "bank@example.com")
    await store.add_emails(draft.id, [NewEmail("upstream@example.com", {})])  # still coming
    now = utcnow()
    await _set(raw, paused.id, JobStatus.PAUSED, None)
    for finished, at in ((recent, now - timedelta(hours=2)), (old, now - timedelta(days=2))):
        await _emails_to(raw, finished.id, EmailStatus.SENT)
        await _set(raw, finished.id, JobStatus.COMPLETED, at)

    jobs, emails = await store.count_by_status()

    assert jobs[JobStatus.PROCESSING] == 1
    assert jobs[JobStatus.PAUSED] == 1
    assert jobs[JobStatus.COMPLETED] == 2  # every job: the job table is small
    assert jobs[JobStatus.DRAFT] == 1
    assert emails[EmailStatus.PENDING] == 5  # running and paused, not the draft's
    assert emails[EmailStatus.SENT] == 4  # the recent job only: not the history
    assert set(emails) == set(EmailStatus)


async def test_email_gauge_counts_a_finished_job_again_once_it_changed(
    store: SqlStore, raw: AsyncEngine
) -> None:
    job, _ = await processing_job(store, 3)
    await _emails_to(raw, job.id, EmailStatus.FAILED)
    await _set(raw, job.id, JobStatus.FAILED, utcnow() - timedelta(minutes=5))
    _, emails = await store.count_by_status()
    assert (emails[EmailStatus.FAILED], emails[EmailStatus.PENDING]) == (3, 0)

    # restart-failed reopens it: counted as it is now, not as it was when it finished
    assert await store.restart_failed([job.id]) == 3
    _, emails = await store.count_by_status()
    assert (emails[EmailStatus.FAILED], emails[EmailStatus.PENDING]) == (0, 3)

    # finishing again (a new finished_at) is counted again too
    await _emails_to(raw, job.id, EmailStatus.SENT)
    await _set(raw, job.id, JobStatus.COMPLETED, utcnow())
    _, emails = await store.count_by_status()
    assert (emails[EmailStatus.SENT], emails[EmailStatus.PENDING]) == (3, 0)
