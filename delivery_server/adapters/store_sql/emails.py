"""What a consumer does with one email (``EmailStore``): claim it, then settle it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import Queries, clip_error
from delivery_server.adapters.store_sql.rows import (
    EMAIL_WITH_JOB_COLUMNS,
    JOB_PREFIX,
    email_from_row,
    job_from_row,
    template_from_row,
)
from delivery_server.adapters.store_sql.schema import email, job, template
from delivery_server.errors import PermanentError
from delivery_server.models import (
    TERMINAL_EMAIL_STATUSES,
    ClaimedEmail,
    ClaimOutcome,
    ClaimResult,
    EmailStatus,
    JobStatus,
    Template,
    utcnow,
)

# A consumer that outlived its lease still knows best how its send ended: the
# reconciler's "unknown" is a guess that a confirmed outcome may overwrite.
SETTLEABLE = (EmailStatus.SENDING, EmailStatus.UNKNOWN)
FINAL_STATUSES = TERMINAL_EMAIL_STATUSES - {EmailStatus.SENT}

# The per-email statements run for every send, so they are built once (with bound
# parameters) instead of on each call: that halves the Python time of a claim.
_EMAIL_ID = sa.bindparam("b_email_id", type_=sa.BigInteger)
_NOW = sa.bindparam("b_now", type_=sa.DateTime)
_ERROR = sa.bindparam("b_error", type_=sa.Text)

CLAIM = (
    sa.update(email)
    .where(
        email.c.id == _EMAIL_ID,
        email.c.status == EmailStatus.QUEUED,
        sa.exists().where(job.c.id == email.c.job_id, job.c.status == JobStatus.PROCESSING),
    )
    .values(
        status=EmailStatus.SENDING,
        attempts=email.c.attempts + 1,
        lease_until=sa.bindparam("b_lease_until", type_=sa.DateTime),
        updated_at=_NOW,
    )
)
CLAIMED_ROW = (
    sa.select(*EMAIL_WITH_JOB_COLUMNS).select_from(email.join(job)).where(email.c.id == _EMAIL_ID)
)
CLAIM_STATE = (
    sa.select(email.c.status, job.c.status.label("job_status"))
    .select_from(email.join(job))
    .where(email.c.id == _EMAIL_ID)
)
# A None error keeps the previous one (a shutdown or throttle has nothing new to say).
_SETTLE_VALUES = {
    "lease_until": None,
    "updated_at": _NOW,
    "last_error": sa.func.coalesce(_ERROR, email.c.last_error),
}
MARK_SENT = (
    sa.update(email)
    .where(email.c.id == _EMAIL_ID, email.c.status.in_(SETTLEABLE))
    .values(
        status=EmailStatus.SENT,
        provider_message_id=sa.bindparam("b_provider_message_id", type_=sa.String),
        sent_at=sa.bindparam("b_sent_at", type_=sa.DateTime),
        lease_until=None,
        updated_at=_NOW,
    )
)
_GIVE_BACK = sa.bindparam("b_give_back", type_=sa.Integer)
MARK_RETRY = (
    sa.update(email)
    .where(email.c.id == _EMAIL_ID, email.c.status == EmailStatus.SENDING)
    .values(
        status=EmailStatus.QUEUED,
        attempts=sa.case((email.c.attempts > _GIVE_BACK, email.c.attempts - _GIVE_BACK), else_=0),
        **_SETTLE_VALUES,
    )
)
MARK_FINAL = (
    sa.update(email)
    .where(email.c.id == _EMAIL_ID, email.c.status.in_(SETTLEABLE))
    .values(status=sa.bindparam("b_status", type_=sa.String), **_SETTLE_VALUES)
)


class EmailQueries(Queries):
    """Claiming and settling single emails; each call is one short transaction."""

    async def claim(self, email_id: int, lease_seconds: float) -> ClaimResult:
        """Move the email from ``queued`` to ``sending`` if its job is processing, add an
        attempt and a lease, and return it with its job. Exactly one concurrent caller
        wins; the others learn why not (``ClaimOutcome``)."""

        async def work(conn: AsyncConnection) -> ClaimResult:
            now = utcnow()
            lease_until = now + timedelta(seconds=lease_seconds)
            claim = {"b_email_id": email_id, "b_now": now, "b_lease_until": lease_until}
            result = await conn.execute(CLAIM, claim)
            if result.rowcount != 1:
                return ClaimResult(await _why_not_claimed(conn, email_id))
            row = (await conn.execute(CLAIMED_ROW, {"b_email_id": email_id})).mappings().one()
            try:
                claimed = ClaimedEmail(email_from_row(row), job_from_row(row, JOB_PREFIX))
            except PermanentError as exc:
                # Written malformed by an upstream system: no attempt can ever send it.
                final = {"b_email_id": email_id, "b_now": now, "b_status": EmailStatus.FAILED}
                await conn.execute(MARK_FINAL, {**final, "b_error": str(exc)})
                return ClaimResult(ClaimOutcome.NOT_QUEUED)
            return ClaimResult(ClaimOutcome.CLAIMED, claimed)

        return await self._db.run(work)

    async def template(self, name: str, locale: str) -> Template | None:
        """The highest version of a template in a locale, or None."""

        async def read(conn: AsyncConnection) -> Template | None:
            row = (
                (
                    await conn.execute(
                        sa.select(template)
                        .where(template.c.name == name, template.c.locale == locale)
                        .order_by(template.c.version.desc())
                        .limit(1)
                    )
                )
                .mappings()
                .first()
            )
            return None if row is None else template_from_row(row)

        return await self._db.run(read, write=False)

    async def mark_sent(self, email_id: int, provider_message_id: str, sent_at: datetime) -> None:
        """Record a confirmed send of a claimed (or lease-expired) email."""
        params = {"b_provider_message_id": provider_message_id, "b_sent_at": sent_at}
        await self._settle(MARK_SENT, email_id, params)

    async def mark_retry(self, email_id: int, error: str | None, count_attempt: bool) -> None:
        """Put a claimed email back to ``queued``; ``count_attempt=False`` gives the
        attempt back. A ``None`` error keeps the previous ``last_error``."""
        params = {"b_error": clip_error(error), "b_give_back": 0 if count_attempt else 1}
        await self._settle(MARK_RETRY, email_id, params)

    async def mark_final(self, email_id: int, status: EmailStatus, error: str | None) -> None:
        """Settle a claimed email as ``failed``, ``unknown``, ``suppressed`` or
        ``cancelled`` (``mark_sent`` records sends)."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"mark_final cannot set status {status.value!r}")
        await self._settle(MARK_FINAL, email_id, {"b_status": status, "b_error": clip_error(error)})

    async def _settle(self, statement: sa.Update, email_id: int, params: dict[str, Any]) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(statement, {"b_email_id": email_id, "b_now": utcnow(), **params})

        await self._db.run(work)


async def _why_not_claimed(conn: AsyncConnection, email_id: int) -> ClaimOutcome:
    row = (await conn.execute(CLAIM_STATE, {"b_email_id": email_id})).first()
    if row is None:
        return ClaimOutcome.MISSING
    if row.job_status == JobStatus.PAUSED and row.status == EmailStatus.QUEUED:
        return ClaimOutcome.JOB_PAUSED
    if row.job_status not in (JobStatus.PROCESSING, JobStatus.PAUSED):
        return ClaimOutcome.JOB_INACTIVE
    return ClaimOutcome.NOT_QUEUED
