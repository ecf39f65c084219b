"""The publisher: finds due jobs and publishes one queue message per pending email.

Several publishers may run at once (one per task): ``publish_pending`` locks rows with
SKIP LOCKED, so each email is handed to exactly one of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from delivery_server.heartbeats import Heartbeats
from delivery_server.loops import Backoff, wait_or_stop
from delivery_server.metrics import Metrics
from delivery_server.models import QueueMessage, utcnow
from delivery_server.ports import PublisherStore, Queue

log = structlog.get_logger(__name__)

LOOP_NAME = "publisher"
# The first page of a job in each poll is small: consumers receive its messages at once,
# but their claims wait for the page's commit, which comes after its last message is
# published. Fifty messages (five SQS batches) commit within milliseconds; the rest of
# the job follows in full pages while the first emails are already being sent.
FIRST_PAGE = 50


class Publisher:
    """Polls the store every ``poll_interval`` and streams pending emails to the queue."""

    def __init__(
        self,
        store: PublisherStore,
        queue: Queue,
        metrics: Metrics,
        heartbeats: Heartbeats,
        *,
        poll_interval: float,
        page_size: int,
    ) -> None:
        self._store = store
        self._queue = queue
        self._metrics = metrics
        self._heartbeats = heartbeats
        self._poll_interval = poll_interval
        self._page_size = page_size

    async def _publish(self, messages: Sequence[QueueMessage]) -> set[int]:
        failed = await self._queue.publish(messages)
        self._metrics.emails_published.inc(len(messages) - len(failed))
        if failed:
            log.warning("publish_partially_failed", failed=len(failed), total=len(messages))
        return failed

    async def poll_once(self, stop: asyncio.Event | None = None) -> int:
        """Publish every due job's pending emails, page by page, then settle finished jobs.
        Return how many emails were queued."""
        queued = 0
        for job in await self._store.due_jobs(utcnow()):
            job_queued = 0
            page = min(FIRST_PAGE, self._page_size)
            while stop is None or not stop.is_set():
                count = await self._store.publish_pending(job.id, page, self._publish)
                job_queued += count
                self._heartbeats.beat(LOOP_NAME)
                if count < page:
                    break
                page = self._page_size
            if job_queued:
                log.info("job_published", job_id=job.id, queued=job_queued)
            queued += job_queued
        for job in await self._store.settle_jobs(utcnow()):
            log.info(
                "job_finished",
                job_id=job.id,
                status=job.status.value,
                sent=job.sent_count,
                failed=job.failed_count,
            )
        return queued

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; a failing backend slows the loop, never ends it."""
        self._heartbeats.register(LOOP_NAME, allowance=max(60.0, self._poll_interval * 5))
        backoff = Backoff(maximum=30.0)
        try:
            while not stop.is_set():
                try:
                    await self.poll_once(stop)
                except Exception as exc:  # keep polling: the database or queue may come back
                    delay = backoff.next_delay()
                    log.warning("publisher_poll_failed", error=str(exc)[:300], retry_in=delay)
                    self._heartbeats.beat(LOOP_NAME)
                    if await wait_or_stop(stop, delay):
                        break
                    continue
                backoff.reset()
                self._heartbeats.beat(LOOP_NAME)
                await wait_or_stop(stop, self._poll_interval)
        finally:
            self._heartbeats.unregister(LOOP_NAME)
