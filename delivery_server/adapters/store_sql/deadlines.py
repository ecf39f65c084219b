"""Send-by deadlines: the unsent emails of a job whose ``send_by`` has passed expire.

The settler does this in bulk so that the job finishes (its emails would otherwise wait
for a claim to find them too late); claims and the pipeline check the deadline too, so
no email goes out after it. Batched, each batch its own short transaction, skipping rows
a publisher holds: a 500,000-email job is never locked at once.
"""

from __future__ import annotations

import functools
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.database import Database
from delivery_server.adapters.store_sql.schema import email, job
from delivery_server.models import EmailStatus, JobStatus

# Emails expired per transaction, and at most per settler pass (the next pass goes on).
EXPIRE_BATCH = 1_000
EXPIRE_PER_PASS = 20_000
# What has not left the database yet; ``sending`` emails are in a consumer's hands, which
# checks the deadline before it sends.
UNSENT = (EmailStatus.PENDING, EmailStatus.QUEUED)


def _overdue_jobs(now: datetime) -> sa.Select[tuple[int]]:
    """Processing jobs whose ``send_by`` has come."""
    return sa.select(job.c.id).where(
        job.c.status == JobStatus.PROCESSING, job.c.send_by.is_not(None), job.c.send_by <= now
    )


def before_deadline(now: datetime) -> sa.ColumnElement[bool]:
    """The job (``delivery_job``) has no ``send_by`` or it is still ahead."""
    return sa.or_(job.c.send_by.is_(None), job.c.send_by > now)


async def expire_overdue(db: Database, now: datetime) -> int:
    """Expire the unsent emails of processing jobs past their ``send_by``, up to
    ``EXPIRE_PER_PASS`` of them; return how many."""

    async def read(conn: AsyncConnection) -> list[int]:
        return list(await conn.scalars(_overdue_jobs(now)))

    expired = 0
    for job_id in await db.run(read, write=False):
        for status in UNSENT:
            while expired < EXPIRE_PER_PASS:
                limit = min(EXPIRE_BATCH, EXPIRE_PER_PASS - expired)
                work = functools.partial(
                    _expire_batch, job_id=job_id, status=status, limit=limit, now=now
                )
                count = await db.run(work)
                expired += count
                if count < limit:
                    break
    return expired


async def _expire_batch(
    conn: AsyncConnection, job_id: int, status: EmailStatus, limit: int, now: datetime
) -> int:
    ids = list(
        await conn.scalars(
            sa.select(email.c.id)
            .where(email.c.job_id == job_id, email.c.status == status)
            .order_by(email.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        return 0
    result = await conn.execute(
        sa.update(email)
        .where(email.c.id.in_(ids), email.c.status == status)
        .values(status=EmailStatus.EXPIRED, updated_at=now)
    )
    return result.rowcount
