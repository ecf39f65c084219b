"""Retention: the personal data of finished jobs is erased after ``DELIVERY_RETENTION_DAYS``.

A job that finished (``completed``, ``failed``, ``cancelled``) more than that many days
ago loses its emails' addresses, variables and attachment refs; its counts, statuses,
times and message ids stay (``RetentionStore.purge_job``). ``delivery-server db purge``
runs one pass on an operator's word, and every publisher runs one a day
(``Retention.run``). A pass is idempotent and cheap when there is nothing to do (one
query over the job table), and its batches are short transactions, so several tasks may
run one; each task's first pass comes at a random moment of its first hour, so a fleet
started together (a deploy) does not purge in step.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from delivery_server.loops import wait_or_stop
from delivery_server.models import JobPurge, utcnow
from delivery_server.ports import RetentionStore

log = structlog.get_logger(__name__)

DAY_SECONDS = 86_400.0
FIRST_PASS_SPREAD_SECONDS = 3_600.0
# Rows per transaction: each batch holds the locks of at most this many emails of a
# finished job (and its job row) for a few milliseconds.
PURGE_BATCH = 1_000
# A failed pass (database away) is tried again this much later, not a day later.
RETRY_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What one pass did."""

    finished_before: datetime
    jobs: tuple[JobPurge, ...]

    @property
    def erased(self) -> int:
        """Emails whose personal data was erased."""
        return sum(j.erased for j in self.jobs)

    @property
    def purged(self) -> int:
        """Jobs now wholly purged (``purged_at`` set)."""
        return sum(1 for j in self.jobs if j.complete)

    @property
    def unfinished(self) -> int:
        """Jobs a later pass must take again (reopened, or the pass was stopped)."""
        return sum(1 for j in self.jobs if not j.complete)


class Retention:
    """Purges finished jobs older than ``days``; ``run`` does it daily."""

    def __init__(
        self,
        store: RetentionStore,
        *,
        days: int,
        batch_size: int = PURGE_BATCH,
        interval: float = DAY_SECONDS,
        first_pass_spread: float = FIRST_PASS_SPREAD_SECONDS,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if days < 1:
            raise ValueError(f"retention is at least 1 day, not {days}")
        self._store = store
        self._days = days
        self._batch_size = batch_size
        self._interval = interval
        self._first_pass_spread = first_pass_spread
        self._rng = rng

    def cutoff(self, now: datetime) -> datetime:
        """Jobs that finished before this are purged."""
        return now - timedelta(days=self._days)

    async def purge_once(
        self, now: datetime | None = None, keep_going: Callable[[], bool] | None = None
    ) -> PurgeReport:
        """One pass over every purgeable job, oldest first, while ``keep_going()``."""
        finished_before = self.cutoff(now or utcnow())
        done: list[JobPurge] = []
        for job_id in await self._store.purgeable_jobs(finished_before):
            if keep_going is not None and not keep_going():
                break
            purge = await self._store.purge_job(
                job_id, finished_before, self._batch_size, keep_going
            )
            if purge.erased or purge.complete:
                log.info(
                    "job_purged" if purge.complete else "job_purge_stopped",
                    job_id=job_id,
                    emails=purge.erased,
                )
            done.append(purge)
        return PurgeReport(finished_before, tuple(done))

    async def run(self, stop: asyncio.Event) -> None:
        """A pass at a random moment of the first ``first_pass_spread`` seconds, then one
        every ``interval``, until ``stop`` (which also ends a pass between batches)."""
        delay = self._rng() * self._first_pass_spread
        while not await wait_or_stop(stop, delay):
            try:
                report = await self.purge_once(keep_going=lambda: not stop.is_set())
            except Exception as exc:  # the database may come back: try again later
                log.warning("retention_pass_failed", error=str(exc)[:300], retry_in=RETRY_SECONDS)
                delay = RETRY_SECONDS
                continue
            if report.jobs:
                log.info(
                    "retention_pass",
                    days=self._days,
                    jobs_purged=report.purged,
                    emails=report.erased,
                    unfinished=report.unfinished,
                )
            delay = self._interval
