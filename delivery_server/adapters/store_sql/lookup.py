"""Looking a job's emails over (``ports.LookupStore``): pre-flight's pages and its audit
trail, a customer's emails by address, and a job's failures grouped by error class.

Every read here is bounded: pages are keyset pages on the email id (the
``(job_id, status, id)`` index), the address lookup is one probe of the ``to_address``
index (MariaDB/MySQL), and the error groups are streamed and merged as they come.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import INSERT_BATCH, Queries, batches
from delivery_server.adapters.store_sql.listing import EMAIL_ROW_COLUMNS, email_row
from delivery_server.adapters.store_sql.schema import attachment_digest, email, job
from delivery_server.email_records import (
    AttachmentDigest,
    FoundEmail,
    StoredRecipient,
    error_class,
)
from delivery_server.models import (
    EmailStatus,
    ErrorGroup,
    JobStatus,
    utcnow,
)
from delivery_server.suppression import normalise_address

# Settled problems only (as the summary's last errors): sent emails may carry an old
# retry's error, and queued ones are still being tried.
ERROR_STATUSES = (
    EmailStatus.FAILED,
    EmailStatus.UNKNOWN,
    EmailStatus.SUPPRESSED,
    EmailStatus.EXPIRED,
)
# Classes kept per job; the rest are counted together (a job of distinct errors, each
# quoting something we do not recognise as an id, must not fill memory).
MAX_ERROR_GROUPS = 1_000
OTHER_ERRORS = "(other errors)"
STREAM_PARTITION = 500

_FOUND_COLUMNS = (
    *EMAIL_ROW_COLUMNS,
    job.c.name.label("job_name"),
    job.c.status.label("job_status"),
)


class LookupQueries(Queries):
    """Pre-flight's reads and records, and finding emails by address."""

    async def recipients_page(
        self, job_id: int, statuses: Sequence[EmailStatus], after_id: int, limit: int
    ) -> list[StoredRecipient]:
        """Emails of the job in ``statuses`` with ids above ``after_id``, in id order,
        with their JSON as written (malformed JSON comes back as text, to be reported)."""
        query = (
            sa.select(
                email.c.id,
                email.c.to_address,
                email.c.locale,
                # As text: a row an upstream system wrote with broken JSON must be one
                # problem of the report, not a failed read of the whole page.
                sa.type_coerce(email.c.variables, sa.Text).label("variables"),
                sa.type_coerce(email.c.attachments, sa.Text).label("attachments"),
            )
            .where(email.c.job_id == job_id, email.c.status.in_(statuses), email.c.id > after_id)
            .order_by(email.c.id)
            .limit(limit)
        )

        async def read(conn: AsyncConnection) -> list[StoredRecipient]:
            return [_recipient(row) for row in (await conn.execute(query)).mappings()]

        return await self._db.run(read, write=False)

    async def record_attachment_digests(
        self, job_id: int, digests: Sequence[AttachmentDigest]
    ) -> int:
        """Store what pre-flight read of attachments (the audit trail); return how many."""
        rows = list(digests)
        now = utcnow()

        async def work(conn: AsyncConnection) -> int:
            for batch in batches(rows, INSERT_BATCH):
                await conn.execute(
                    sa.insert(attachment_digest), [_digest_row(job_id, d, now) for d in batch]
                )
            return len(rows)

        return await self._db.run(work) if rows else 0

    async def emails_to(self, address: str, limit: int) -> list[FoundEmail]:
        """Up to ``limit`` emails, newest first, whose address normalises as ``address``
        does (``suppression.normalise_address``: case, edge spaces, the IDNA domain)."""
        wanted = normalise_address(address)
        # The spellings a row may hold: as typed, and as normalised (IDNA or not).
        spellings = sorted({address.strip(), address.strip().lower(), wanted})
        if self._db.is_sqlite:
            # SQLite compares case-sensitively; embedded databases are small: scan.
            matches = sa.func.lower(sa.func.trim(email.c.to_address)).in_(spellings)
        else:
            # One probe of the index: the emails' collation ignores case (and accents,
            # which the exact comparison below takes back out).
            matches = email.c.to_address.in_(spellings)
        query = (
            sa.select(*_FOUND_COLUMNS)
            .join(job, job.c.id == email.c.job_id)
            .where(matches)
            .order_by(email.c.id.desc())
        )

        async def read(conn: AsyncConnection) -> list[FoundEmail]:
            found: list[FoundEmail] = []
            result = await conn.stream(query)
            async for row in result.mappings():
                if normalise_address(row["to_address"]) == wanted:
                    found.append(_found(row))
                    if len(found) >= limit:
                        break
            await result.close()
            return found

        return await self._db.run(read, write=False)


async def error_groups(conn: AsyncConnection, job_id: int) -> list[ErrorGroup]:
    """The job's settled problem emails by ``email_records.error_class`` of their
    ``last_error``, the largest class first (ties: the newest first)."""
    query = (
        sa.select(email.c.last_error, sa.func.count(), sa.func.max(email.c.id))
        .where(
            email.c.job_id == job_id,
            email.c.status.in_(ERROR_STATUSES),
            email.c.last_error.is_not(None),
        )
        .group_by(email.c.last_error)
    )
    groups: dict[str, tuple[int, int]] = {}
    result = await conn.stream(query)
    async for partition in result.partitions(STREAM_PARTITION):
        for error, count, newest in partition:
            key = error_class(error)
            if key not in groups and len(groups) >= MAX_ERROR_GROUPS:
                key = OTHER_ERRORS
            seen, example = groups.get(key, (0, 0))
            groups[key] = (seen + count, max(example, newest))
    return sorted(
        (ErrorGroup(key, count, example) for key, (count, example) in groups.items()),
        key=lambda group: (-group.count, -group.example_email_id),
    )


def _json(text: Any) -> Any:
    """A JSON column's value from its text; malformed text is returned as it is (a str,
    which pre-flight reports as not an object or list)."""
    if text is None or not isinstance(text, str | bytes):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _recipient(row: Mapping[Any, Any]) -> StoredRecipient:
    return StoredRecipient(
        id=row["id"],
        to_address=row["to_address"],
        locale=row["locale"],
        variables=_json(row["variables"]),
        attachments=_json(row["attachments"]),
    )


def _digest_row(job_id: int, digest: AttachmentDigest, now: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "email_id": digest.email_id,
        "number": digest.number,
        "size_bytes": digest.size,
        "sha256": digest.sha256,
        "checked_at": now,
    }


def _found(row: Mapping[Any, Any]) -> FoundEmail:
    return FoundEmail(
        email=email_row(row),
        job_name=row["job_name"],
        job_status=JobStatus(row["job_status"]),
    )
