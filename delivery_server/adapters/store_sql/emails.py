"""What a consumer does with one email (``EmailStore``): claim it, then settle it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import Queries, clip_error
from delivery_server.adapters.store_sql.rows import (
    JOB_JSON,
    email_from_row,
    job_from_json,
    job_json_of_email,
    template_from_row,
)
from delivery_server.adapters.store_sql.schema import email, job, template
from delivery_server.adapters.store_sql.send_records import (
    SendRecord,
    mark_sent_many,
    record_late_sends,
)
from delivery_server.adapters.store_sql.suppressions import address_suppressed, suppress_locked
from delivery_server.batching import Batcher
from delivery_server.errors import PermanentError, RetryableError
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
from delivery_server.retry import compute_backoff, retry_until

# A consumer that outlived its lease still knows best how its send ended: the
# reconciler's "unknown" is a guess that a confirmed outcome may overwrite.
SETTLEABLE = (EmailStatus.SENDING, EmailStatus.UNKNOWN)
FINAL_STATUSES = TERMINAL_EMAIL_STATUSES - {EmailStatus.SENT}

# The per-email statements run for every send, so they are built once (with bound
# parameters) instead of on each call: that halves the Python time of a claim.
_EMAIL_ID = sa.bindparam("b_email_id", type_=sa.BigInteger)
_NOW = sa.bindparam("b_now", type_=sa.DateTime)
_ERROR = sa.bindparam("b_error", type_=sa.Text)

_EMAIL_IDS: sa.BindParameter[Any] = sa.bindparam("b_email_ids", expanding=True)
# A batch of claims (see ``claim``): lock the queued ones and read them with their jobs,
# then claim them. The job is a scalar subquery, not a join: on MariaDB a join would lock
# the job row too (every claim of a job would queue behind the others and behind the
# settler); a subquery of a locking read does not lock (tested).
_EMAIL_WITH_JOB_JSON = [*email.c, job_json_of_email()]
# With each email, whether its address is suppressed (one primary-key probe; ``b_now``).
LOCK_QUEUED = (
    sa.select(*_EMAIL_WITH_JOB_JSON, address_suppressed())
    .where(email.c.id.in_(_EMAIL_IDS), email.c.status == EmailStatus.QUEUED)
    .order_by(email.c.id)
    .with_for_update()
)
CLAIM_MANY = (
    sa.update(email)
    .where(
        email.c.id.in_(_EMAIL_IDS),
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
CLAIMED_ROWS = sa.select(*_EMAIL_WITH_JOB_JSON).where(
    email.c.id.in_(_EMAIL_IDS), email.c.status == EmailStatus.SENDING
)
CLAIM_STATES = (
    sa.select(email.c.id, email.c.status, job.c.status.label("job_status"))
    .select_from(email.join(job))
    .where(email.c.id.in_(_EMAIL_IDS))
)
# A claim batch whose COMMIT went unanswered: give back whatever it did claim. Its lease
# stamp (microseconds, taken once per batch) tells its rows from anyone else's.
RELEASE_UNCONFIRMED_CLAIMS = (
    sa.update(email)
    .where(
        email.c.id.in_(_EMAIL_IDS),
        email.c.status == EmailStatus.SENDING,
        email.c.lease_until == sa.bindparam("b_lease_until", type_=sa.DateTime),
    )
    .values(
        status=EmailStatus.QUEUED,
        attempts=sa.case((email.c.attempts > 0, email.c.attempts - 1), else_=0),
        lease_until=None,
        updated_at=_NOW,
    )
)
# A None error keeps the previous one (a shutdown or throttle has nothing new to say).
_SETTLE_VALUES = {
    "lease_until": None,
    "updated_at": _NOW,
    "last_error": sa.func.coalesce(_ERROR, email.c.last_error),
}
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


# Claims arrive in bursts (one receive starts up to ten handlers): one transaction each.
CLAIM_BATCH = 50
# Sends finish a few milliseconds apart: hold their records a moment, commit them together.
SENT_BATCH = 50
SENT_BATCH_DELAY = 0.02


class EmailQueries(Queries):
    """Claiming and settling single emails. Concurrent claims and concurrent send records
    are each written as one transaction (``batching``); every call still returns its own
    outcome, and only once it is committed."""

    _claims: dict[float, Batcher[int, ClaimResult]]
    _sent: Batcher[SendRecord, None]

    def _init_batchers(self) -> None:
        self._claims = {}
        self._sent = Batcher(self._mark_sent_batch, max_size=SENT_BATCH, max_delay=SENT_BATCH_DELAY)

    async def _close_batchers(self) -> None:
        for batcher in self._claims.values():
            await batcher.close()
        await self._sent.close()

    async def claim(self, email_id: int, lease_seconds: float) -> ClaimResult:
        """Move the email from ``queued`` to ``sending`` if its job is processing, add an
        attempt and a lease, and return it with its job. Exactly one concurrent caller
        wins; the others learn why not (``ClaimOutcome``)."""
        batcher = self._claims.get(lease_seconds)
        if batcher is None:

            async def run(email_ids: list[int]) -> list[ClaimResult]:
                return await self._claim_batch(email_ids, lease_seconds)

            async def give_back(abandoned: list[tuple[int, ClaimResult]]) -> None:
                # Claimed for a caller that was cancelled meanwhile: nothing was sent.
                for email_id, result in abandoned:
                    if result.claimed is not None:
                        await self.mark_retry(email_id, None, count_attempt=False)

            batcher = Batcher(run, max_size=CLAIM_BATCH, on_abandoned=give_back)
            self._claims[lease_seconds] = batcher
        return await batcher.submit(email_id)

    async def _claim_batch(self, email_ids: list[int], lease_seconds: float) -> list[ClaimResult]:
        """One transaction for many claims: lock and read the queued rows with their jobs
        (waiting for a publisher that still holds one; a plain UPDATE of several ids on
        InnoDB in READ COMMITTED would skip such a row), then claim them per job. A row
        locked here and still queued after the update belongs to a job that is not
        processing; the others get their reason from one more read."""

        now = utcnow()
        lease_until = now + timedelta(seconds=lease_seconds)
        unique = sorted(set(email_ids))

        async def work(conn: AsyncConnection) -> list[ClaimResult]:
            params = {"b_email_ids": unique, "b_now": now}
            locked = (await conn.execute(LOCK_QUEUED, params)).mappings().all()
            claimed: dict[int, ClaimResult] = {}
            if locked:
                claimed = await _claim_locked(conn, locked, now, lease_until)
            outcomes = dict(claimed)
            missing = [i for i in unique if i not in outcomes]
            if missing:
                outcomes.update(await _why_not_claimed(conn, missing))
            return _per_request(email_ids, outcomes)

        try:
            return await self._db.run(work)
        except RetryableError:
            # The connection may have dropped after the COMMIT reached the server: then
            # these rows are ``sending`` with nobody to send them, and would end
            # ``unknown`` although no send started. Give them back before saying so.
            await self._release_unconfirmed(unique, lease_until, deadline=lease_seconds / 2)
            raise

    async def _release_unconfirmed(
        self, email_ids: list[int], lease_until: datetime, *, deadline: float
    ) -> None:
        """Undo a claim batch that may or may not have committed (retried until the
        database answers, within ``deadline`` seconds; past that the lease and the
        reconciler take over)."""
        params = {"b_email_ids": email_ids, "b_lease_until": lease_until}

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(RELEASE_UNCONFIRMED_CLAIMS, {**params, "b_now": utcnow()})

        with contextlib.suppress(RetryableError):
            await retry_until(
                lambda: self._db.run(work),
                retry_on=lambda exc: isinstance(exc, RetryableError),
                delay=lambda failures: compute_backoff(failures, base=0.1, cap=2.0),
                within=deadline,
            )

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
        """Record a confirmed send of a claimed (or lease-expired) email; returns once it
        is committed (with the other sends recorded in the same moment)."""
        await self._sent.submit(SendRecord(email_id, provider_message_id, sent_at))

    async def _mark_sent_batch(self, sends: list[SendRecord]) -> list[None]:
        async def work(conn: AsyncConnection) -> None:
            ids = [send.email_id for send in sends]
            recorded = (await conn.execute(*mark_sent_many(sends, EmailStatus.SENDING))).rowcount
            if recorded == len(set(ids)):
                return  # the usual batch: every email was still ``sending``
            await record_late_sends(conn, sends)

        await self._db.run(work)
        return [None] * len(sends)

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


async def _claim_locked(
    conn: AsyncConnection, locked: Sequence[sa.RowMapping], now: datetime, lease_until: datetime
) -> dict[int, ClaimResult]:
    """Claim the locked queued rows; return the claimed ones (malformed ones failed).
    Suppressed ones become ``suppressed`` instead (``_why_not_claimed`` reports them)."""
    suppressed = await suppress_locked(conn, locked, now)
    if suppressed:
        locked = [row for row in locked if row["id"] not in suppressed]
        if not locked:
            return {}
    ids = [row["id"] for row in locked]
    params = {"b_email_ids": ids, "b_now": now, "b_lease_until": lease_until}
    count = (await conn.execute(CLAIM_MANY, params)).rowcount
    if count == 0:
        return {}  # their job is not processing: ``_why_not_claimed`` says how
    rows: Iterable[Mapping[Any, Any]]
    if count == len(ids):  # the usual batch: all claimed, as read plus what was set
        claimed_values = {"status": EmailStatus.SENDING, "updated_at": now}
        rows = ({**row, **claimed_values, "attempts": row["attempts"] + 1} for row in locked)
    else:  # some jobs are not processing: read back which rows were claimed
        rows = (await conn.execute(CLAIMED_ROWS, {"b_email_ids": ids})).mappings()
    claimed: dict[int, ClaimResult] = {}
    for row in rows:
        try:
            claimed[row["id"]] = ClaimResult(
                ClaimOutcome.CLAIMED,
                ClaimedEmail(email_from_row(row), job_from_json(row[JOB_JSON])),
            )
        except PermanentError as exc:
            # Written malformed by an upstream system: no attempt can ever send it.
            final = {"b_email_id": row["id"], "b_now": now, "b_status": EmailStatus.FAILED}
            await conn.execute(MARK_FINAL, {**final, "b_error": str(exc)})
            claimed[row["id"]] = ClaimResult(ClaimOutcome.NOT_QUEUED)
    return claimed


async def _why_not_claimed(conn: AsyncConnection, email_ids: list[int]) -> dict[int, ClaimResult]:
    outcomes = dict.fromkeys(email_ids, ClaimResult(ClaimOutcome.MISSING))
    for row in await conn.execute(CLAIM_STATES, {"b_email_ids": email_ids}):
        outcomes[row.id] = ClaimResult(_reason(row.status, row.job_status))
    return outcomes


def _reason(status: str, job_status: str) -> ClaimOutcome:
    if status == EmailStatus.SUPPRESSED:
        return ClaimOutcome.SUPPRESSED
    if job_status == JobStatus.PAUSED and status == EmailStatus.QUEUED:
        return ClaimOutcome.JOB_PAUSED
    if job_status not in (JobStatus.PROCESSING, JobStatus.PAUSED):
        return ClaimOutcome.JOB_INACTIVE
    return ClaimOutcome.NOT_QUEUED


def _per_request(email_ids: list[int], outcomes: dict[int, ClaimResult]) -> list[ClaimResult]:
    """One result per request, in order; a repeated id is claimed by its first request."""
    seen: set[int] = set()
    results = []
    for email_id in email_ids:
        result = outcomes[email_id]
        if email_id in seen and result.claimed is not None:
            result = ClaimResult(ClaimOutcome.NOT_QUEUED)
        seen.add(email_id)
        results.append(result)
    return results
