"""The database gauges (``delivery_jobs``, ``delivery_emails``, ``delivery_emails_delivery``),
counted so that their cost follows the jobs in flight, not the history.

Every task refreshes them every few seconds (``app.roles``). Counting every email by
status read the whole email table each time: with a history of millions of emails that
is the largest database cost of an idle fleet, and it grew with every task. Now the email
gauges cover the jobs in flight (processing, paused) and those finished within
``RECENT_JOBS``; a job in flight is counted at each refresh, over its own rows of the
(job, status) index, and a finished one once (again only when it is reopened or finishes
anew). Its delivery statuses still change after it finished (SES reports arrive for
minutes, a late bounce for days), so those are recounted at most every
``FINISHED_DELIVERY_REFRESH``. Jobs are counted whole: the job table is small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import Queries, count_statuses
from delivery_server.adapters.store_sql.schema import email, job
from delivery_server.models import DeliveryStatus, EmailStatus, JobStatus, utcnow

# The email gauges cover jobs in flight and those finished this long ago at most.
RECENT_JOBS = timedelta(days=1)
FINISHED_DELIVERY_REFRESH = timedelta(seconds=60)
IN_FLIGHT = (JobStatus.PROCESSING, JobStatus.PAUSED)


@dataclass(frozen=True, slots=True)
class _Counted:
    """A finished job's counts, and what they were taken of."""

    version: tuple[Any, ...]  # (status, finished_at): another value means count again
    at: datetime
    counts: dict[str, int]


class GaugeQueries(Queries):
    """Counts for the gauges; finished jobs' counts are kept between refreshes."""

    _finished_statuses: dict[int, _Counted]
    _finished_deliveries: dict[int, _Counted]

    def _init_gauges(self) -> None:
        self._finished_statuses = {}
        self._finished_deliveries = {}

    async def count_by_status(self) -> tuple[dict[JobStatus, int], dict[EmailStatus, int]]:
        """Jobs by status (all of them), and the emails of the jobs in flight or finished
        within ``RECENT_JOBS`` by status (every status, zero when absent)."""

        async def read(conn: AsyncConnection) -> tuple[dict[JobStatus, int], dict[str, int]]:
            jobs = dict.fromkeys(JobStatus, 0)
            for status, count in await conn.execute(
                sa.select(job.c.status, sa.func.count()).group_by(job.c.status)
            ):
                jobs[JobStatus(status)] += count
            emails = await self._scoped_counts(
                conn, email.c.status, self._finished_statuses, refresh=None
            )
            return jobs, emails

        jobs, emails = await self._db.run(read, write=False)
        return jobs, count_statuses(emails.items())

    async def count_by_delivery_status(self) -> dict[DeliveryStatus, int]:
        """Emails by delivery status (zero when absent) over the jobs processing or
        paused, or finished within ``RECENT_JOBS``: never the whole history."""

        async def read(conn: AsyncConnection) -> dict[str, int]:
            return await self._scoped_counts(
                conn,
                email.c.delivery_status,
                self._finished_deliveries,
                refresh=FINISHED_DELIVERY_REFRESH,
            )

        found = await self._db.run(read, write=False)
        return {status: found.get(status.value, 0) for status in DeliveryStatus}

    async def _scoped_counts(
        self,
        conn: AsyncConnection,
        column: sa.Column[Any],
        finished: dict[int, _Counted],
        refresh: timedelta | None,
    ) -> dict[str, int]:
        """Emails by ``column`` over the jobs in scope: those in flight counted now, the
        finished ones from ``finished`` unless changed (or older than ``refresh``), which
        is brought up to date and keeps only jobs still in scope."""
        now = utcnow()
        scope = await conn.execute(
            sa.select(job.c.id, job.c.status, job.c.finished_at).where(
                sa.or_(job.c.status.in_(IN_FLIGHT), job.c.finished_at >= now - RECENT_JOBS)
            )
        )
        versions = {row.id: (row.status, row.finished_at) for row in scope}
        kept = {
            job_id: counted
            for job_id, counted in finished.items()
            if versions.get(job_id) == counted.version
            and (refresh is None or now - counted.at < refresh)
        }
        to_count = [
            job_id
            for job_id, (status, _) in versions.items()
            if status in IN_FLIGHT or job_id not in kept
        ]
        counted = await _counts_by_job(conn, column, to_count) if to_count else {}
        finished.clear()
        finished.update(kept)
        for job_id in to_count:
            if versions[job_id][0] not in IN_FLIGHT:
                finished[job_id] = _Counted(versions[job_id], now, counted.get(job_id, {}))
        totals: dict[str, int] = {}
        for counts in [*(counted.get(j, {}) for j in to_count), *(c.counts for c in kept.values())]:
            for value, count in counts.items():
                totals[value] = totals.get(value, 0) + count
        return totals


async def _counts_by_job(
    conn: AsyncConnection, column: sa.Column[Any], job_ids: Sequence[int]
) -> dict[int, dict[str, int]]:
    """Emails of ``job_ids`` by ``column`` (NULLs left out), per job: one GROUP BY over
    the job's index."""
    rows = await conn.execute(
        sa.select(email.c.job_id, column, sa.func.count())
        .where(email.c.job_id.in_(job_ids), column.is_not(None))
        .group_by(email.c.job_id, column)
    )
    counts: dict[int, dict[str, int]] = {}
    for job_id, value, count in rows:
        counts.setdefault(job_id, {})[str(value)] = int(count)
    return counts
