"""What happened after the send (``TrackingStore``): SES events recorded (``events``), the
reputation brake's counts, pausing a job with a reason (the delivery gauge: ``gauges``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import Queries
from delivery_server.adapters.store_sql.events import naive_utc, record_batch
from delivery_server.adapters.store_sql.schema import email, event, job
from delivery_server.adapters.store_sql.suppressions import run_retrying_conflicts
from delivery_server.batching import Batcher
from delivery_server.models import (
    BrakeCounts,
    DeliveryStatus,
    EmailStatus,
    EventOutcome,
    JobStatus,
    SuppressionReason,
    TrackingEvent,
)

# Counting a big job's sent emails reads its whole index (docs/benchmarks.md): above this
# many sends a job's counts are reused for a few seconds. Numerator and denominator come
# from the same moment, so the rates are right, only that much older.
BRAKE_EXACT_BELOW = 10_000
BRAKE_RECOUNT_SECONDS = 5.0
MAX_PAUSED_REASON_CHARS = 1000
# Concurrent record_events calls written together, at most.
EVENT_CALLS_PER_TRANSACTION = 10


class TrackingQueries(Queries):
    """SES events into delivery statuses; the brake's counts; the delivery gauge.

    Concurrent ``record_events`` calls (the tracker's groups of receives, up to 100
    events each; ``POST /ses/events``, one event each) are written as one transaction
    (``batching``), each call still getting its own outcomes once they are committed:
    bigger transactions record more events a second, on MariaDB and SQLite alike
    (docs/benchmarks.md has the figures)."""

    # Big jobs' brake counts, with when (monotonic) they were counted.
    _brake_counted: dict[int, tuple[float, BrakeCounts]]
    _events: Batcher[list[TrackingEvent], list[EventOutcome]]

    def _init_tracking(self) -> None:
        self._brake_counted = {}
        self._events = Batcher(self._record_calls, max_size=EVENT_CALLS_PER_TRANSACTION)

    async def _close_tracking(self) -> None:
        await self._events.close()

    async def record_events(self, events: Sequence[TrackingEvent]) -> list[EventOutcome]:
        """Store each event once and apply it; one outcome per event (see
        ``ports.TrackingStore``). Returns once they are committed."""
        batch = [naive_utc(e) for e in events]
        if not batch:
            return []
        return await self._events.submit(batch)

    async def _record_calls(self, calls: list[list[TrackingEvent]]) -> list[list[EventOutcome]]:
        events = [tracked for call in calls for tracked in call]
        outcomes = await run_retrying_conflicts(self._db, lambda conn: record_batch(conn, events))
        results, start = [], 0
        for call in calls:
            results.append(outcomes[start : start + len(call)])
            start += len(call)
        return results

    async def brake_counts(self, job_ids: Sequence[int]) -> dict[int, BrakeCounts]:
        """Sent emails, emails that bounced permanently and emails whose recipient
        complained, for each of ``job_ids`` that exists. A job with many sends is counted
        at most every ``BRAKE_RECOUNT_SECONDS``."""
        clock = time.monotonic()
        self._brake_counted = {
            job_id: counted
            for job_id, counted in self._brake_counted.items()
            if clock - counted[0] < BRAKE_RECOUNT_SECONDS
        }
        wanted = sorted(set(job_ids))
        counts = {i: self._brake_counted[i][1] for i in wanted if i in self._brake_counted}
        due = [i for i in wanted if i not in counts]
        if due:
            fresh = await self._db.run(lambda conn: _brake_counts(conn, due), write=False)
            counts.update(fresh)
            for job_id, counted in fresh.items():
                if counted.sent >= BRAKE_EXACT_BELOW:
                    self._brake_counted[job_id] = (clock, counted)
        return counts

    async def pause_job(self, job_id: int, reason: str) -> bool:
        """Pause a processing job with ``reason`` as its ``paused_reason``; False when it
        was not processing. ``jobs resume`` clears the reason."""

        async def work(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                sa.update(job)
                .where(job.c.id == job_id, job.c.status == JobStatus.PROCESSING)
                .values(status=JobStatus.PAUSED, paused_reason=reason[:MAX_PAUSED_REASON_CHARS])
            )
            return bool(result.rowcount == 1)

        return await self._db.run(work)


async def delivery_counts(conn: AsyncConnection, job_ids: list[int]) -> dict[DeliveryStatus, int]:
    """Emails of ``job_ids`` by delivery status (those without one left out): one
    GROUP BY over the (job, delivery status) index."""
    rows = await conn.execute(
        sa.select(email.c.delivery_status, sa.func.count())
        .where(email.c.job_id.in_(job_ids), email.c.delivery_status.is_not(None))
        .group_by(email.c.delivery_status)
    )
    return {DeliveryStatus(status): int(count) for status, count in rows}


async def _brake_counts(conn: AsyncConnection, job_ids: list[int]) -> dict[int, BrakeCounts]:
    """One statement for every job: its sent emails (the job and status index) and the
    emails of its hard bounces and complaints (the event index alone). The brake runs
    after most batches that carry a bounce: three statements made it the dearest part of
    recording them (docs/benchmarks.md)."""
    rows = await conn.execute(_BRAKE_COUNTS, {"b_job_ids": job_ids})
    return {
        row.id: BrakeCounts(sent=row.sent, bounced=row.bounced, complained=row.complained)
        for row in rows
    }


def _reputation_hits(reason: SuppressionReason) -> sa.ScalarSelect[Any]:
    return (
        sa.select(sa.func.count(sa.distinct(event.c.email_id)))
        .where(event.c.job_id == job.c.id, event.c.reputation == reason)
        .scalar_subquery()
    )


_BRAKE_COUNTS = sa.select(
    job.c.id,
    sa.select(sa.func.count())
    .where(email.c.job_id == job.c.id, email.c.status == EmailStatus.SENT)
    .scalar_subquery()
    .label("sent"),
    _reputation_hits(SuppressionReason.HARD_BOUNCE).label("bounced"),
    _reputation_hits(SuppressionReason.COMPLAINT).label("complained"),
).where(job.c.id.in_(sa.bindparam("b_job_ids", expanding=True)))
