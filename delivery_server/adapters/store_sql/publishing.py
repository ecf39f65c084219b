"""Publisher, job settler and reconciler queries (``PublisherStore``, ``ReconcilerStore``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import ACTIVE, LEASE_EXPIRED, Queries
from delivery_server.adapters.store_sql.deadlines import before_deadline, expire_overdue
from delivery_server.adapters.store_sql.rows import job_from_row
from delivery_server.adapters.store_sql.schema import JOB_STATUS_INDEX, email, job
from delivery_server.adapters.store_sql.template_pins import start_jobs
from delivery_server.models import (
    ERASED_ADDRESS,
    EmailStatus,
    FailureKind,
    Job,
    JobStatus,
    QueueMessage,
    utcnow,
)
from delivery_server.ports import PublishFn

# How stale the counts of a job in flight may get (``job_summary`` counts live).
COUNT_REFRESH = timedelta(seconds=10)
# Emails that make a finished job ``failed``.
DOUBTFUL = (EmailStatus.FAILED, EmailStatus.UNKNOWN)
# Jobs whose failed emails may be restarted: a cancelled job stays cancelled.
RESTARTABLE_JOBS = (JobStatus.PROCESSING, JobStatus.FAILED, JobStatus.PAUSED)


def _job_is(*statuses: JobStatus) -> sa.Exists:
    """The email's job is in one of ``statuses`` (correlated to ``delivery_email``)."""
    return sa.exists().where(job.c.id == email.c.job_id, job.c.status.in_(statuses))


def _job_has_emails(status: EmailStatus) -> sa.Exists:
    """The job has an email in ``status`` (correlated to ``delivery_job``): one probe of
    the (job_id, status) index, which the planner is told to use, because its
    statistics sometimes prefer scanning every job's emails in that status."""
    return (
        sa.select(sa.literal(1))
        .where(email.c.job_id == job.c.id, email.c.status == status)
        .with_hint(email, f"FORCE INDEX ({JOB_STATUS_INDEX})", "mysql")
        .exists()
    )


def _active_emails_exist() -> sa.ColumnElement[bool]:
    """The job still has emails in flight (correlated to ``delivery_job``)."""
    # One probe per status: a single EXISTS with ``status IN (...)`` walks all of a
    # job's emails on MariaDB.
    return sa.or_(*(_job_has_emails(status) for status in ACTIVE))


class PublishingQueries(Queries):
    """Moving emails from the database to the queue, and jobs to their end."""

    # When settle_jobs last counted each processing job's emails.
    _counted_at: dict[int, datetime]

    async def due_jobs(self, now: datetime) -> list[Job]:
        """Jobs in ``processing`` whose ``scheduled_at`` is empty or has passed. The
        first time a job is picked up it starts: ``started_at`` is set and its template
        version pinned (``template_pins``; a job whose template has no version yet, or
        that started before pinning existed, is pinned at the next pickup that finds
        one). An upstream system may pin a version itself: ``template_version``."""

        async def read(conn: AsyncConnection) -> list[Job]:
            rows = await conn.execute(
                sa.select(job)
                .where(
                    job.c.status == JobStatus.PROCESSING,
                    sa.or_(job.c.scheduled_at.is_(None), job.c.scheduled_at <= now),
                )
                .order_by(job.c.id)
            )
            return [job_from_row(row) for row in rows.mappings()]

        jobs = await self._db.run(read, write=False)
        unstarted = [j.id for j in jobs if j.started_at is None or j.template_version is None]
        if not unstarted:  # the usual poll: no write (and no SQLite write lock)
            return jobs

        async def start(conn: AsyncConnection) -> None:
            await conn.execute(start_jobs(unstarted, now))

        await self._db.run(start)
        return await self._db.run(read, write=False)

    async def publish_pending(self, job_id: int, limit: int, publish: PublishFn) -> int:
        """Lock up to ``limit`` pending emails of a processing job (skipping rows other
        publishers hold), mark them ``queued``, call ``publish`` and put back to
        ``pending`` the ones it could not publish, in one transaction. If ``publish``
        raises, everything rolls back and the error propagates. Return how many were
        queued."""

        async def work(conn: AsyncConnection) -> int:
            now = utcnow()
            result = await conn.execute(
                sa.select(email.c.id)
                .where(
                    email.c.job_id == job_id,
                    email.c.status == EmailStatus.PENDING,
                    # Past its send_by, the settler expires them instead.
                    sa.exists().where(
                        job.c.id == email.c.job_id,
                        job.c.status == JobStatus.PROCESSING,
                        before_deadline(now),
                    ),
                )
                .order_by(email.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            ids = list(result.scalars())
            if not ids:
                return 0
            await conn.execute(
                sa.update(email)
                .where(email.c.id.in_(ids))
                .values(status=EmailStatus.QUEUED, updated_at=now)
            )
            failed = await publish([QueueMessage(email_id=i, job_id=job_id) for i in ids])
            failed &= set(ids)
            if failed:
                await conn.execute(
                    sa.update(email)
                    .where(email.c.id.in_(sorted(failed)))
                    .values(status=EmailStatus.PENDING, updated_at=now)
                )
            return len(ids) - len(failed)

        return await self._db.run(work)

    async def settle_jobs(self, now: datetime) -> list[Job]:
        """Expire the unsent emails of processing jobs past their ``send_by``, then
        finish processing jobs with no email left in flight (``completed``, or ``failed``
        when any email failed or is unknown: an expired email is no failure) and refresh
        their counts. Return the jobs that finished.

        Counting a job reads its whole index, slow for a big job (docs/benchmarks.md), so
        the counts of a job still in flight are refreshed at most every ``COUNT_REFRESH``
        (by ``now``); whether it is still in flight is one index probe per job, every time."""
        await expire_overdue(self._db, now)
        jobs = await self._db.run(_processing_jobs, write=False)
        self._counted_at = {j.id: t for j, _ in jobs if (t := self._counted_at.get(j.id))}
        due = [
            j.id
            for j, in_flight in jobs
            if not in_flight or now - self._counted_at.get(j.id, datetime.min) >= COUNT_REFRESH
        ]
        if not due:
            return []
        counts = await self._db.run(lambda conn: _email_counts(conn, due), write=False)
        self._counted_at.update(dict.fromkeys(due, now))
        changes = [
            (change, sum(counts[j.id].get(status, 0) for status in DOUBTFUL))
            for j, _ in jobs
            if j.id in counts and (change := _settle(j, counts[j.id], now))
        ]
        if not changes:
            return []

        async def write(conn: AsyncConnection) -> list[Job]:
            finished = []
            for settled, doubtful in changes:
                if settled.status is JobStatus.FAILED and (
                    await _doubtful_emails(conn, settled.id) != doubtful
                ):
                    continue  # the next pass counts again
                condition = [job.c.id == settled.id, job.c.status == JobStatus.PROCESSING]
                if settled.status is not JobStatus.PROCESSING:
                    # A restart may have put emails back since the counts were read.
                    condition.append(~_active_emails_exist())
                result = await conn.execute(
                    sa.update(job)
                    .where(*condition)
                    .values(
                        status=settled.status,
                        finished_at=settled.finished_at,
                        total_count=settled.total_count,
                        sent_count=settled.sent_count,
                        failed_count=settled.failed_count,
                    )
                )
                if result.rowcount == 1 and settled.status is not JobStatus.PROCESSING:
                    finished.append(settled)
            return finished

        return await self._db.run(write)

    async def restart_failed(
        self,
        job_ids: Sequence[int] | None,
        include_unknown: bool = False,
        *,
        transient_only: bool = False,
        error_contains: str | None = None,
    ) -> int:
        """Put failed (and, on request, unknown) emails back to ``pending`` with zero
        attempts, and failed jobs that got emails back to ``processing``; ``None`` means
        every job. Cancelled jobs are left alone; paused jobs stay paused; purged emails
        (retention erased their address) stay as they are. ``transient_only`` leaves
        permanent failures failed; ``error_contains`` takes only emails whose
        ``last_error`` contains it (``%`` and ``_`` match themselves). Return how many
        emails were restarted."""
        if job_ids is not None and not job_ids:
            return 0
        statuses = [EmailStatus.FAILED]
        if include_unknown:
            statuses.append(EmailStatus.UNKNOWN)

        async def work(conn: AsyncConnection) -> int:
            now = utcnow()
            emails = [
                email.c.status.in_(statuses),
                _job_is(*RESTARTABLE_JOBS),
                email.c.to_address != ERASED_ADDRESS,
                *_restart_filters(transient_only, error_contains),
            ]
            jobs = [job.c.status == JobStatus.FAILED]
            if job_ids is not None:
                emails.append(email.c.job_id.in_(job_ids))
                jobs.append(job.c.id.in_(job_ids))
            result = await conn.execute(
                sa.update(email)
                .where(*emails)
                .values(
                    status=EmailStatus.PENDING,
                    attempts=0,
                    last_error=None,
                    failure_kind=None,
                    lease_until=None,
                    updated_at=now,
                )
            )
            restarted = result.rowcount
            if restarted:
                await conn.execute(
                    sa.update(job)
                    .where(*jobs, _job_has_emails(EmailStatus.PENDING))
                    .values(status=JobStatus.PROCESSING, finished_at=None)
                )
            return restarted

        return await self._db.run(work)

    async def expire_leases(self, now: datetime) -> int:
        """Turn ``sending`` emails whose lease has passed into ``unknown`` (the send may
        have happened); return how many."""

        async def work(conn: AsyncConnection) -> int:
            result = await conn.execute(
                sa.update(email)
                .where(email.c.status == EmailStatus.SENDING, email.c.lease_until < now)
                .values(
                    status=EmailStatus.UNKNOWN,
                    last_error=LEASE_EXPIRED,
                    lease_until=None,
                    updated_at=now,
                )
            )
            return result.rowcount

        return await self._db.run(work)

    async def stale_queued(self, older_than: datetime, limit: int) -> list[QueueMessage]:
        """Queued emails of processing jobs untouched since ``older_than`` (their message
        may be lost), oldest first; touches them so the next pass skips them a while."""

        async def work(conn: AsyncConnection) -> list[QueueMessage]:
            processing = await conn.execute(
                sa.select(job.c.id).where(job.c.status == JobStatus.PROCESSING)
            )
            job_ids = list(processing.scalars())
            if not job_ids:
                return []
            # job_id IN (...) rather than a join on the job status, so that the
            # (status, updated_at) index gives the order and LIMIT stops the scan early.
            rows = (
                await conn.execute(
                    sa.select(email.c.id, email.c.job_id)
                    .where(
                        email.c.status == EmailStatus.QUEUED,
                        email.c.updated_at < older_than,
                        email.c.job_id.in_(job_ids),
                    )
                    .order_by(email.c.updated_at, email.c.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return []
            await conn.execute(
                sa.update(email)
                .where(email.c.id.in_([row.id for row in rows]))
                .values(updated_at=utcnow())
            )
            return [QueueMessage(email_id=row.id, job_id=row.job_id) for row in rows]

        return await self._db.run(work)

    async def count_queued(self, older_than: datetime) -> tuple[int, int]:
        """How many emails are ``queued`` (any job, any age), and how many of those were
        untouched since ``older_than``: one range of the (status, updated_at) index, read
        without touching the table."""

        async def read(conn: AsyncConnection) -> tuple[int, int]:
            row = (
                await conn.execute(
                    sa.select(
                        sa.func.count(),
                        sa.func.count(sa.case((email.c.updated_at < older_than, 1))),
                    ).where(email.c.status == EmailStatus.QUEUED)
                )
            ).one()
            return int(row[0]), int(row[1])

        return await self._db.run(read, write=False)


def _restart_filters(
    transient_only: bool, error_contains: str | None
) -> list[sa.ColumnElement[bool]]:
    """The conditions ``restart-failed --transient-only / --error TEXT`` add."""
    filters: list[sa.ColumnElement[bool]] = []
    if transient_only:
        # NULL is "not known to be permanent": unknown emails, and failures recorded
        # before the kind was (r0006 classified those it could).
        filters.append(
            sa.or_(email.c.failure_kind.is_(None), email.c.failure_kind != FailureKind.PERMANENT)
        )
    if error_contains is not None:
        # LIKE with the text's own % and _ escaped; case-insensitive on both databases
        # (MariaDB's collation, SQLite's ASCII LIKE).
        filters.append(email.c.last_error.contains(error_contains, autoescape=True))
    return filters


async def _processing_jobs(conn: AsyncConnection) -> list[tuple[Job, bool]]:
    """Processing jobs, each with whether it still has emails in flight."""
    rows = await conn.execute(
        sa.select(job, _active_emails_exist().label("in_flight"))
        .where(job.c.status == JobStatus.PROCESSING)
        .order_by(job.c.id)
    )
    return [(job_from_row(row), bool(row["in_flight"])) for row in rows.mappings()]


async def _email_counts(conn: AsyncConnection, job_ids: list[int]) -> dict[int, dict[str, int]]:
    """Email counts by status for each job (one GROUP BY over the job/status index)."""
    grouped = await conn.execute(
        sa.select(email.c.job_id, email.c.status, sa.func.count())
        .where(email.c.job_id.in_(job_ids))
        .group_by(email.c.job_id, email.c.status)
    )
    counts: dict[int, dict[str, int]] = {job_id: {} for job_id in job_ids}
    for job_id, status, count in grouped:
        counts[job_id][status] = count
    return counts


async def _doubtful_emails(conn: AsyncConnection, job_id: int) -> int:
    """The job's failed and unknown emails, counted again before it is finished as
    failed. The counts were read in an earlier transaction: a late send confirmation may
    have turned an unknown email sent since, finding the job still processing (so not
    reopening it). A locking read waits for such a confirmation still in progress."""
    count = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(email)
        .where(email.c.job_id == job_id, email.c.status.in_(DOUBTFUL))
        .with_for_update(read=True)
    )
    return int(count or 0)


def _settle(current: Job, counts: dict[str, int], now: datetime) -> Job | None:
    """The job as its email counts say it should be; None when nothing changes."""
    total = sum(counts.values())
    failed = counts.get(EmailStatus.FAILED, 0)
    settled = dataclasses.replace(
        current, total_count=total, sent_count=counts.get(EmailStatus.SENT, 0), failed_count=failed
    )
    if not any(counts.get(status, 0) for status in ACTIVE):
        unknown = counts.get(EmailStatus.UNKNOWN, 0)
        status = JobStatus.COMPLETED if failed + unknown == 0 else JobStatus.FAILED
        settled = dataclasses.replace(settled, status=status, finished_at=now)
    return None if settled == current else settled
