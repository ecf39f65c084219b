"""What a consumer does with one email (``EmailStore``): claim it, then settle it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import Queries, clip_error
from delivery_server.adapters.store_sql.email_statements import (
    CLAIM_MANY,
    CLAIM_STATES,
    CLAIMED_ROWS,
    EXPIRE_QUEUED,
    FINAL_STATUSES,
    LOCK_QUEUED,
    MARK_EXPIRED,
    MARK_FINAL,
    MARK_RETRY,
    RELEASE_UNCONFIRMED_CLAIMS,
)
from delivery_server.adapters.store_sql.rows import (
    JOB_JSON,
    email_from_row,
    job_from_json,
    template_from_row,
)
from delivery_server.adapters.store_sql.schema import template
from delivery_server.adapters.store_sql.send_records import (
    SendRecord,
    mark_sent_many,
    record_late_sends,
)
from delivery_server.adapters.store_sql.suppressions import suppress_locked
from delivery_server.batching import Batcher
from delivery_server.errors import PermanentError, RetryableError
from delivery_server.models import (
    ClaimedEmail,
    ClaimOutcome,
    ClaimResult,
    EmailStatus,
    FailureKind,
    JobStatus,
    Template,
    utcnow,
)
from delivery_server.retry import compute_backoff, retry_until

__all__ = ["LOCK_QUEUED", "EmailQueries"]  # LOCK_QUEUED: the contract suite checks its plan

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

    async def template(self, name: str, locale: str, as_of: int | None = None) -> Template | None:
        """The highest version of a template in a locale (at or below ``as_of`` when
        given: what a job pinned at that version renders), or None."""
        query = sa.select(template).where(template.c.name == name, template.c.locale == locale)
        if as_of is not None:
            query = query.where(template.c.version <= as_of)

        async def read(conn: AsyncConnection) -> Template | None:
            found = await conn.execute(query.order_by(template.c.version.desc()).limit(1))
            row = found.mappings().first()
            return None if row is None else template_from_row(row)

        return await self._db.run(read, write=False)

    async def mark_sent(
        self,
        email_id: int,
        provider_message_id: str,
        sent_at: datetime,
        template_version: int | None = None,
        segments: int | None = None,
    ) -> None:
        """Record a confirmed send of a claimed (or lease-expired) email, the template
        version that rendered it and the parts it was billed as (``segments``, None for
        channels that do not count them); returns once it is committed (with the other
        sends recorded in the same moment)."""
        record = SendRecord(email_id, provider_message_id, sent_at, template_version, segments)
        await self._sent.submit(record)

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

    async def mark_final(
        self,
        email_id: int,
        status: EmailStatus,
        error: str | None,
        template_version: int | None = None,
        *,
        kind: FailureKind | None = None,
    ) -> None:
        """Settle a claimed email as ``failed``, ``unknown``, ``suppressed``,
        ``cancelled`` or ``expired`` (its attempt given back) (``mark_sent`` records
        sends); ``template_version``: the version that rendered it, if one did. A
        failed one records its ``kind`` (``TRANSIENT`` when not given)."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"mark_final cannot set status {status.value!r}")
        params = {"b_error": clip_error(error), "b_template_version": template_version}
        if status is EmailStatus.EXPIRED:
            await self._settle(MARK_EXPIRED, email_id, params)
        else:
            failure_kind = (kind or FailureKind.TRANSIENT) if status is EmailStatus.FAILED else None
            final = {"b_status": status, "b_failure_kind": failure_kind}
            await self._settle(MARK_FINAL, email_id, {**final, **params})

    async def _settle(self, statement: sa.Update, email_id: int, params: dict[str, Any]) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(statement, {"b_email_id": email_id, "b_now": utcnow(), **params})

        await self._db.run(work)


async def _claim_locked(
    conn: AsyncConnection, locked: Sequence[sa.RowMapping], now: datetime, lease_until: datetime
) -> dict[int, ClaimResult]:
    """Claim the locked queued rows; return the claimed ones (malformed ones failed).
    Those of a processing job whose send_by has passed become ``expired``, suppressed
    ones ``suppressed`` (``_why_not_claimed`` reports both)."""
    expired = [row["id"] for row in locked if _too_late(row, now)]
    if expired:
        await conn.execute(EXPIRE_QUEUED, {"b_email_ids": expired, "b_now": now})
        locked = [row for row in locked if row["id"] not in set(expired)]
        if not locked:
            return {}
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
            final = {
                "b_email_id": row["id"],
                "b_now": now,
                "b_status": EmailStatus.FAILED,
                "b_failure_kind": FailureKind.PERMANENT,
            }
            await conn.execute(
                MARK_FINAL, {**final, "b_error": str(exc), "b_template_version": None}
            )
            claimed[row["id"]] = ClaimResult(ClaimOutcome.NOT_QUEUED)
    return claimed


def _too_late(row: Mapping[Any, Any], now: datetime) -> bool:
    """Whether the locked row's job is processing and past its send_by (a paused job's
    emails wait for its resume: they expire then)."""
    job_ = job_from_json(row[JOB_JSON])
    return job_.status is JobStatus.PROCESSING and job_.deadline_passed(now)


async def _why_not_claimed(conn: AsyncConnection, email_ids: list[int]) -> dict[int, ClaimResult]:
    outcomes = dict.fromkeys(email_ids, ClaimResult(ClaimOutcome.MISSING))
    for row in await conn.execute(CLAIM_STATES, {"b_email_ids": email_ids}):
        outcomes[row.id] = ClaimResult(_reason(row.status, row.job_status))
    return outcomes


def _reason(status: str, job_status: str) -> ClaimOutcome:
    if status == EmailStatus.SUPPRESSED:
        return ClaimOutcome.SUPPRESSED
    if status == EmailStatus.EXPIRED:
        return ClaimOutcome.EXPIRED
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
