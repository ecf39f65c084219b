"""Retention queries (``RetentionStore``): erase the personal data of finished jobs.

What goes: each email's address (to ``models.ERASED_ADDRESS``: the column is NOT NULL),
its variables (to ``{}``) and its attachment refs (to NULL). What stays: the job and its
counts, every status, attempt count, time and provider message id, so the history and
the tracking events still add up.

A job is erased in batches, each its own short transaction over at most ``batch_size``
rows found through the (job_id, status, id) index, one status after another by id (a
keyset: no batch reads the rows an earlier one erased). Each batch first locks the job
row and checks that the job is still finished before the cutoff: a ``restart-failed``
that reopens it waits for that batch, and every later batch stops. A restart never
takes an erased email (``restart_failed`` skips them), so a half-purged job that is
reopened resends only what was not erased yet. ``purged_at`` is set at the end, only when
no email of the job keeps an address: an email that changed status during the purge
(a late send confirmation of an ``unknown`` one) may have been passed over, and a later
pass then takes the job again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import Queries
from delivery_server.adapters.store_sql.schema import email, job
from delivery_server.models import ERASED_ADDRESS, EmailStatus, JobPurge, JobStatus, utcnow

FINISHED = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
# The statuses in the order they are erased: a finished job's emails only move from a
# status to one later in this order (sending -> unknown -> sent), so a move during the
# purge mostly lands in a status still to come; the settled ones follow in any order.
_MOVING = (
    EmailStatus.PENDING,
    EmailStatus.QUEUED,
    EmailStatus.SENDING,
    EmailStatus.UNKNOWN,
    EmailStatus.SENT,
)
ERASE_ORDER = (*_MOVING, *(status for status in EmailStatus if status not in _MOVING))


def _purgeable(job_id: int | None, finished_before: datetime) -> list[sa.ColumnElement[bool]]:
    conditions = [
        job.c.status.in_(FINISHED),
        job.c.finished_at < finished_before,
        job.c.purged_at.is_(None),
    ]
    if job_id is not None:
        conditions.append(job.c.id == job_id)
    return conditions


class RetentionQueries(Queries):
    """Finding finished jobs past retention and erasing their emails' personal data."""

    async def purgeable_jobs(self, finished_before: datetime) -> list[int]:
        """Completed, failed and cancelled jobs finished before ``finished_before`` and
        not purged yet, oldest first."""

        async def read(conn: AsyncConnection) -> list[int]:
            rows = await conn.execute(
                sa.select(job.c.id)
                .where(*_purgeable(None, finished_before))
                .order_by(job.c.finished_at, job.c.id)
            )
            return list(rows.scalars())

        return await self._db.run(read, write=False)

    async def purge_job(
        self,
        job_id: int,
        finished_before: datetime,
        batch_size: int,
        keep_going: Callable[[], bool] | None = None,
    ) -> JobPurge:
        """Erase the job's emails ``batch_size`` rows per transaction (module docstring),
        while the job is still purgeable and ``keep_going()`` (when given) says so; set
        ``purged_at`` when all are erased. Return what was done."""
        if batch_size < 1:
            raise ValueError(f"a purge batch holds at least 1 email, not {batch_size}")
        erased = 0
        for status in ERASE_ORDER:
            after = 0
            while True:
                if keep_going is not None and not keep_going():
                    return JobPurge(job_id, erased, complete=False)
                batch = await self._db.run(
                    _batch_eraser(job_id, finished_before, status, after, batch_size)
                )
                if batch is None:  # reopened (restart-failed) or no longer there
                    return JobPurge(job_id, erased, complete=False)
                count, last_id = batch
                erased += count
                if last_id is None:
                    break
                after = last_id
        marked = await self._db.run(_purged_marker(job_id, finished_before))
        return JobPurge(job_id, erased, complete=marked)


Batch = tuple[int, int | None]  # emails erased, the last id (None: the status is done)


def _batch_eraser(
    job_id: int, finished_before: datetime, status: EmailStatus, after: int, limit: int
) -> Callable[[AsyncConnection], Awaitable[Batch | None]]:
    async def work(conn: AsyncConnection) -> Batch | None:
        still_finished = await conn.scalar(
            sa.select(job.c.id).where(*_purgeable(job_id, finished_before)).with_for_update()
        )
        if still_finished is None:
            return None
        ids = list(
            (
                await conn.execute(
                    sa.select(email.c.id)
                    .where(email.c.job_id == job_id, email.c.status == status, email.c.id > after)
                    .order_by(email.c.id)
                    .limit(limit)
                )
            ).scalars()
        )
        if not ids:
            return 0, None
        # Only the personal data: updated_at, like every other time, stays as it was.
        await conn.execute(
            sa.update(email)
            .where(email.c.id.in_(ids))
            .values(to_address=ERASED_ADDRESS, variables={}, attachments=None)
        )
        return len(ids), ids[-1]

    return work


def _purged_marker(
    job_id: int, finished_before: datetime
) -> Callable[[AsyncConnection], Awaitable[bool]]:
    async def work(conn: AsyncConnection) -> bool:
        unerased = (
            sa.select(sa.literal(1))
            .where(email.c.job_id == job_id, email.c.to_address != ERASED_ADDRESS)
            .exists()
        )
        result = await conn.execute(
            sa.update(job)
            .where(*_purgeable(job_id, finished_before), ~unerased)
            .values(purged_at=utcnow())
        )
        return bool(result.rowcount == 1)

    return work
