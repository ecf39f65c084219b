"""A job as the dashboard shows it: its counts, progress, rate and ETA.

Rate and ETA are the API's (``http.api.rates``): the same samples-as-viewed rate that
``GET /api/v1/jobs/{id}`` answers, so the page and the API agree.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from delivery_server.http.api.rates import JobRates, eta_seconds
from delivery_server.http.dashboard.history import SendHistory
from delivery_server.models import (
    ACTIVE_EMAIL_STATUSES,
    DeliveryStatus,
    EmailStatus,
    ErrorGroup,
    Job,
    JobStatus,
)
from delivery_server.ports import Store

FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
# Statuses whose exact counts the jobs list reads (the others' rows are final, or zero).
LIVE = frozenset({JobStatus.PROCESSING, JobStatus.PAUSED})
# What restart-failed can send again: failed emails, and (on request) unknown ones.
RESTARTABLE = (EmailStatus.FAILED, EmailStatus.UNKNOWN)


@dataclass(frozen=True)
class JobProgress:
    job: Job
    done: int
    total: int
    rate: float | None = None  # emails settled per second, lately
    eta: float | None = None  # seconds
    counts: dict[EmailStatus, int] = field(default_factory=dict)
    delivery_counts: dict[DeliveryStatus, int] = field(default_factory=dict)
    error_groups: list[ErrorGroup] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.job.status in FINISHED

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 0.0

    @property
    def per_minute(self) -> float | None:
        return None if self.rate is None else self.rate * 60

    @property
    def restartable(self) -> int:
        return sum(self.counts.get(status, 0) for status in RESTARTABLE)

    @property
    def can_pause(self) -> bool:
        return self.job.status is JobStatus.PROCESSING

    @property
    def can_resume(self) -> bool:
        return self.job.status in (JobStatus.PAUSED, JobStatus.DRAFT)

    @property
    def can_cancel(self) -> bool:
        return not self.finished

    @property
    def can_restart(self) -> bool:
        return self.restartable > 0


async def job_progress(
    store: Store, rates: JobRates, history: SendHistory, job_id: int
) -> JobProgress:
    """One job's exact counts (a ``NotFoundError`` when there is no such job)."""
    summary = await store.job_summary(job_id)
    job = summary.job
    remaining = sum(n for s, n in summary.counts.items() if s in ACTIVE_EMAIL_STATUSES)
    total = sum(summary.counts.values())
    done = total - remaining
    rate, _ = rates.rate(job.id, job.status, done, job.started_at)
    history.record(job.id, summary.counts.get(EmailStatus.SENT, 0))
    return JobProgress(
        job=job,
        done=done,
        total=total,
        rate=rate,
        eta=eta_seconds(remaining, rate) if rate is not None else None,
        counts=summary.counts,
        delivery_counts=summary.delivery_counts,
        error_groups=summary.error_groups,
    )


def row_progress(job: Job) -> JobProgress:
    """A job that is not moving, from the counts on its row."""
    done = job.total_count if job.status in FINISHED else 0
    return JobProgress(job=job, done=done, total=job.total_count)


async def list_progress(
    store: Store, rates: JobRates, history: SendHistory, jobs: list[Job]
) -> list[JobProgress]:
    """The jobs of a list page: exact counts for the processing and paused ones."""

    async def one(job: Job) -> JobProgress:
        if job.status in LIVE:
            return await job_progress(store, rates, history, job.id)
        return row_progress(job)

    return list(await asyncio.gather(*(one(job) for job in jobs)))
