"""What people do through the CLI (``AdminStore``), plus the counts behind metrics."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import INSERT_BATCH, Queries, batches, count_statuses
from delivery_server.adapters.store_sql.lookup import error_groups
from delivery_server.adapters.store_sql.rows import job_from_row, template_from_row
from delivery_server.adapters.store_sql.schema import email, job, template
from delivery_server.adapters.store_sql.template_pins import versions_locked
from delivery_server.adapters.store_sql.tracking import delivery_counts
from delivery_server.errors import ConflictError, NotFoundError
from delivery_server.models import (
    DeliveryStatus,
    EmailStatus,
    Job,
    JobStatus,
    JobSummary,
    NewEmail,
    Template,
    utcnow,
)

FINISHED_JOBS = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
CANCELLABLE_JOBS = (JobStatus.DRAFT, JobStatus.PROCESSING, JobStatus.PAUSED, JobStatus.FAILED)
# Settled problems only: sent emails may carry an old retry's error, and scanning the
# queued ones of a 500,000-email job for errors would take seconds.
ERROR_STATUSES = (EmailStatus.FAILED, EmailStatus.UNKNOWN, EmailStatus.SUPPRESSED)
LAST_ERRORS = 10
VERSION_ATTEMPTS = 5


class AdminQueries(Queries):
    """Templates, jobs and their emails, as an operator or upstream system sees them."""

    async def add_template(self, template_: Template) -> Template:
        """Store a new version of a template: version 0 means highest + 1, the highest
        of the name in any locale (so that a push, in any locale, comes after every
        version a running job may be pinned to: ``template_pins``). Return it as stored;
        a version that already exists is a ``ConflictError``."""
        async with versions_locked(self._db, template_.name):
            for _ in range(VERSION_ATTEMPTS):
                try:
                    return await self._db.run(lambda conn: _insert_template(conn, template_))
                except sa_exc.IntegrityError as exc:
                    if template_.version:
                        raise ConflictError(
                            f"template {template_.name!r} ({template_.locale}) "
                            f"version {template_.version} already exists"
                        ) from exc
                    # Another writer took the same next version: read the highest again.
        raise ConflictError(f"template {template_.name!r}: could not allocate a version")

    async def create_job(
        self,
        name: str,
        template_name: str,
        from_address: str,
        reply_to: str | None = None,
        scheduled_at: datetime | None = None,
        unsubscribe: bool = False,
        send_by: datetime | None = None,
        channel: str = "email",
        target: str | None = None,
        max_segments: int | None = None,
    ) -> Job:
        """Create a job in ``draft`` (``send_by``: emails not sent by then expire;
        ``channel`` and ``target``: what and where it delivers through; ``max_segments``:
        an sms job's cap on segments per SMS)."""
        values: dict[str, Any] = {
            "name": name,
            "status": JobStatus.DRAFT,
            "template_name": template_name,
            "from_address": from_address,
            "reply_to": reply_to,
            "scheduled_at": scheduled_at,
            "unsubscribe": unsubscribe,
            "send_by": send_by,
            "channel": channel,
            "target": target,
            "max_segments": max_segments,
            "created_at": utcnow(),
            "total_count": 0,
            "sent_count": 0,
            "failed_count": 0,
        }

        async def work(conn: AsyncConnection) -> Job:
            result = await conn.execute(sa.insert(job).values(values))
            (job_id,) = result.inserted_primary_key or (None,)
            return job_from_row({"id": job_id, "started_at": None, "finished_at": None, **values})

        return await self._db.run(work)

    async def add_emails(self, job_id: int, emails: Iterable[NewEmail]) -> int:
        """Insert pending emails (multi-row inserts of up to 1000) and add them to the
        job's ``total_count``, in one transaction; return how many."""
        # A list, so that a retried transaction inserts the same emails again.
        new_emails = list(emails)

        async def work(conn: AsyncConnection) -> int:
            await _job_must_exist(conn, job_id)
            now = utcnow()
            for batch in batches(new_emails, INSERT_BATCH):
                await conn.execute(sa.insert(email), [_email_row(job_id, e, now) for e in batch])
            if new_emails:
                await conn.execute(
                    sa.update(job)
                    .where(job.c.id == job_id)
                    .values(total_count=job.c.total_count + len(new_emails))
                )
            return len(new_emails)

        return await self._db.run(work)

    async def set_job_status(
        self, job_id: int, status: JobStatus, expected: Sequence[JobStatus] | None = None
    ) -> Job:
        """Change a job's status, only from ``expected`` when given (``ConflictError``
        otherwise). A finishing status sets ``finished_at``; any other clears it. Any
        status but ``paused`` clears ``paused_reason`` (a resume is an operator's word)."""

        async def work(conn: AsyncConnection) -> Job:
            conditions = [job.c.id == job_id]
            if expected is not None:
                conditions.append(job.c.status.in_(expected))
            values: dict[str, Any] = {
                "status": status,
                "finished_at": utcnow() if status in FINISHED_JOBS else None,
            }
            if status is not JobStatus.PAUSED:
                values["paused_reason"] = None
            result = await conn.execute(sa.update(job).where(*conditions).values(values))
            current = await _job(conn, job_id)
            if result.rowcount != 1:
                allowed = ", ".join(s.value for s in expected or ())
                raise ConflictError(
                    f"job {job_id} is {current.status.value}, not one of: {allowed}"
                )
            return current

        return await self._db.run(work)

    async def job(self, job_id: int) -> Job:
        """One job; ``NotFoundError`` when there is none."""
        return await self._db.run(lambda conn: _job(conn, job_id), write=False)

    async def jobs(self, limit: int = 50) -> list[Job]:
        """The most recent jobs, newest first."""

        async def read(conn: AsyncConnection) -> list[Job]:
            rows = await conn.execute(sa.select(job).order_by(job.c.id.desc()).limit(limit))
            return [job_from_row(row) for row in rows.mappings()]

        return await self._db.run(read, write=False)

    async def job_summary(self, job_id: int) -> JobSummary:
        """The job, its email counts by status and by delivery status, its settled
        problems by error class, and up to ten (email id, last error) pairs, newest
        first. No addresses."""

        async def read(conn: AsyncConnection) -> JobSummary:
            current = await _job(conn, job_id)
            counts = await _email_counts(conn, job_id)
            errors = await conn.execute(
                sa.select(email.c.id, email.c.last_error)
                .where(
                    email.c.job_id == job_id,
                    email.c.status.in_(ERROR_STATUSES),
                    email.c.last_error.is_not(None),
                )
                .order_by(email.c.updated_at.desc(), email.c.id.desc())
                .limit(LAST_ERRORS)
            )
            last_errors = [(row.id, row.last_error) for row in errors]
            delivered = await delivery_counts(conn, [job_id])
            return JobSummary(
                job=current,
                counts=counts,
                last_errors=last_errors,
                delivery_counts={status: delivered.get(status, 0) for status in DeliveryStatus},
                error_groups=await error_groups(conn, job_id),
            )

        return await self._db.run(read, write=False)

    async def cancel_job(self, job_id: int) -> int:
        """Cancel a job and its pending and queued emails (emails being sent finish);
        return how many emails were cancelled. Cancelling a cancelled job again is a
        no-op; a completed job cannot be cancelled."""

        async def work(conn: AsyncConnection) -> int:
            now = utcnow()
            result = await conn.execute(
                sa.update(job)
                .where(job.c.id == job_id, job.c.status.in_(CANCELLABLE_JOBS))
                .values(status=JobStatus.CANCELLED, finished_at=now)
            )
            if result.rowcount != 1:
                current = await _job(conn, job_id)
                if current.status is not JobStatus.CANCELLED:
                    raise ConflictError(f"job {job_id} is {current.status.value}")
            cancelled = await conn.execute(
                sa.update(email)
                .where(
                    email.c.job_id == job_id,
                    email.c.status.in_((EmailStatus.PENDING, EmailStatus.QUEUED)),
                )
                .values(status=EmailStatus.CANCELLED, updated_at=now)
            )
            counts = await _email_counts(conn, job_id)
            await conn.execute(
                sa.update(job)
                .where(job.c.id == job_id)
                .values(
                    total_count=sum(counts.values()),
                    sent_count=counts[EmailStatus.SENT],
                    failed_count=counts[EmailStatus.FAILED],
                )
            )
            return cancelled.rowcount

        return await self._db.run(work)

    async def templates(self) -> list[Template]:
        """The highest version of every template in every locale, by name and locale."""

        async def read(conn: AsyncConnection) -> list[Template]:
            latest = (
                sa.select(
                    template.c.name, template.c.locale, sa.func.max(template.c.version).label("v")
                )
                .group_by(template.c.name, template.c.locale)
                .subquery()
            )
            rows = await conn.execute(
                sa.select(template)
                .join(
                    latest,
                    sa.and_(
                        template.c.name == latest.c.name,
                        template.c.locale == latest.c.locale,
                        template.c.version == latest.c.v,
                    ),
                )
                .order_by(template.c.name, template.c.locale)
            )
            return [template_from_row(row) for row in rows.mappings()]

        return await self._db.run(read, write=False)


async def _job(conn: AsyncConnection, job_id: int) -> Job:
    row = (await conn.execute(sa.select(job).where(job.c.id == job_id))).mappings().first()
    if row is None:
        raise NotFoundError(f"job {job_id} does not exist")
    return job_from_row(row)


async def _job_must_exist(conn: AsyncConnection, job_id: int) -> None:
    if await conn.scalar(sa.select(job.c.id).where(job.c.id == job_id)) is None:
        raise NotFoundError(f"job {job_id} does not exist")


async def _email_counts(conn: AsyncConnection, job_id: int) -> dict[EmailStatus, int]:
    rows = await conn.execute(
        sa.select(email.c.status, sa.func.count())
        .where(email.c.job_id == job_id)
        .group_by(email.c.status)
    )
    return count_statuses((status, count) for status, count in rows)


def _email_row(job_id: int, new: NewEmail, now: datetime) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "to_address": new.to_address,
        "locale": new.locale,
        "variables": new.variables,
        "attachments": [a.to_json() for a in new.attachments] or None,
        "status": EmailStatus.PENDING,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


async def _insert_template(conn: AsyncConnection, new: Template) -> Template:
    version = new.version
    if not version:
        highest = await conn.scalar(
            sa.select(sa.func.max(template.c.version)).where(template.c.name == new.name)
        )
        version = (highest or 0) + 1
    values: dict[str, Any] = {
        "name": new.name,
        "locale": new.locale,
        "version": version,
        "subject": new.subject,
        "text_body": new.text_body,
        "html_body": new.html_body,
        "sms_body": new.sms_body,
        "created_at": utcnow(),
    }
    result = await conn.execute(sa.insert(template).values(values))
    (template_id,) = result.inserted_primary_key or (None,)
    return template_from_row({"id": template_id, **values})
