"""Pages of jobs and of a job's emails, for the operator console (``ports.ConsoleStore``).

Keyset pages on the id: each page is one indexed range read (``ix_delivery_email_job_status``
with a status, ``ix_delivery_email_job_delivery`` with a delivery status; InnoDB's
secondary indexes end in the primary key, so both are ordered by id within a job).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import Queries
from delivery_server.adapters.store_sql.rows import job_from_row
from delivery_server.adapters.store_sql.schema import email, job
from delivery_server.email_listing import EmailFilter, EmailRow
from delivery_server.models import DeliveryStatus, EmailStatus, Job, JobStatus

# What an email listing reads (the API, the console, jobs find and export): one list,
# one conversion.
EMAIL_ROW_COLUMNS = (
    email.c.id,
    email.c.job_id,
    email.c.to_address,
    email.c.status,
    email.c.attempts,
    email.c.delivery_status,
    email.c.delivery_detail,
    email.c.last_error,
    email.c.provider_message_id,
    email.c.locale,
    email.c.created_at,
    email.c.updated_at,
    email.c.sent_at,
    email.c.delivery_updated_at,
    email.c.segments,
)


class ListingQueries(Queries):
    """Jobs newest first, a job's emails in id order."""

    async def job_page(
        self, statuses: Sequence[JobStatus] | None, limit: int, before_id: int | None = None
    ) -> list[Job]:
        """Up to ``limit`` jobs older than ``before_id``, newest first, of ``statuses``."""

        async def read(conn: AsyncConnection) -> list[Job]:
            query = sa.select(job).order_by(job.c.id.desc()).limit(limit)
            if statuses:
                query = query.where(job.c.status.in_(statuses))
            if before_id is not None:
                query = query.where(job.c.id < before_id)
            return [job_from_row(row) for row in (await conn.execute(query)).mappings()]

        return await self._db.run(read, write=False)

    async def email_page(
        self, job_id: int, selected: EmailFilter, limit: int, after_id: int = 0
    ) -> list[EmailRow]:
        """Up to ``limit`` emails of a job with ids above ``after_id``, in id order."""
        conditions: list[sa.ColumnElement[bool]] = [
            email.c.job_id == job_id,
            email.c.id > after_id,
        ]
        if selected.status is not None:
            conditions.append(email.c.status == selected.status)
        if selected.delivery_status is not None:
            conditions.append(email.c.delivery_status == selected.delivery_status)
        if selected.address_prefix:
            # autoescape: a % or _ in what was typed is that character, not a wildcard.
            conditions.append(
                sa.func.lower(email.c.to_address).startswith(
                    selected.address_prefix.lower(), autoescape=True
                )
            )
        query = sa.select(*EMAIL_ROW_COLUMNS).where(*conditions).order_by(email.c.id).limit(limit)

        async def read(conn: AsyncConnection) -> list[EmailRow]:
            return [email_row(row) for row in (await conn.execute(query)).mappings()]

        return await self._db.run(read, write=False)


def email_row(row: Mapping[Any, Any]) -> EmailRow:
    delivery = row["delivery_status"]
    return EmailRow(
        id=row["id"],
        job_id=row["job_id"],
        to_address=row["to_address"],
        status=EmailStatus(row["status"]),
        attempts=row["attempts"],
        delivery_status=DeliveryStatus(delivery) if delivery else None,
        delivery_detail=row["delivery_detail"],
        last_error=row["last_error"],
        provider_message_id=row["provider_message_id"],
        locale=row["locale"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sent_at=row["sent_at"],
        delivery_updated_at=row["delivery_updated_at"],
        segments=row["segments"],
    )
