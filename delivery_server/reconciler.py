"""The reconciler: finds emails that fell between the cracks (DESIGN §4).

* ``sending`` past its lease: the task that held it died, maybe mid-send → ``unknown``
  (never resent blindly; ``restart-failed --include-unknown`` resends on an operator's word).
* ``queued`` untouched for ``requeue_after``: its message may be lost (queue purged,
  dead-lettered) → published again, oldest first. A duplicate message is harmless (claims
  are conditional), but a big job's emails wait in the queue far longer than
  ``requeue_after`` (the 500,000-email benchmark once republished a large part of its job
  for nothing: docs/benchmarks.md), so age alone does not make a message lost.

  How many: each message the queue holds (visible, in flight or delayed) carries at most
  one queued email, so at least ``queued emails - queue depth`` of them have no message;
  that many stale ones are republished, no more. Messages that carry no queued email
  (duplicates, messages of settled emails not yet deleted) and SQS's lagging counts make
  the depth too large: a lost message then waits until the queue drains and the depth
  drops, it is never skipped for good. A depth too small only makes harmless
  duplicates. When the depth cannot be read, nothing is republished that pass. For the
  in-process queue after a restart, the depth is 0 and every queued email is republished
  at once.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from delivery_server.errors import DeliveryError
from delivery_server.heartbeats import Heartbeats
from delivery_server.loops import Backoff, wait_or_stop
from delivery_server.metrics import Metrics
from delivery_server.models import utcnow
from delivery_server.ports import Queue, ReconcilerStore

log = structlog.get_logger(__name__)

LOOP_NAME = "reconciler"
REPUBLISH_BATCH = 500


def surely_lost(queued: int, depth: int) -> int:
    """How many queued emails have lost their message for certain when the queue holds
    ``depth`` messages: each message carries at most one of them."""
    return max(0, queued - depth)


class Reconciler:
    """Runs every ``interval`` seconds."""

    def __init__(
        self,
        store: ReconcilerStore,
        queue: Queue,
        metrics: Metrics,
        heartbeats: Heartbeats,
        *,
        interval: float,
        requeue_after: float,
    ) -> None:
        self._store = store
        self._queue = queue
        self._metrics = metrics
        self._heartbeats = heartbeats
        self._interval = interval
        self._requeue_after = requeue_after

    async def republish_stale(self, older_than_seconds: float) -> int:
        """Publish again the queued emails untouched for ``older_than_seconds``, oldest
        first, but no more than have surely lost their message (module docstring).
        Return how many were published."""
        # One cutoff for the whole pass: the rows it touches are then newer than it and
        # cannot be picked twice.
        cutoff = utcnow() - timedelta(seconds=older_than_seconds)
        queued, stale = await self._store.count_queued(cutoff)
        if not stale:
            return 0
        try:
            depth = await self._queue.depth()
        except DeliveryError as exc:
            log.warning(
                "republish_skipped_queue_depth_unknown", stale_emails=stale, error=str(exc)[:300]
            )
            return 0
        allowance = min(stale, surely_lost(queued, depth))
        if allowance < stale:
            log.info(
                "stale_queued_emails_still_in_queue",
                stale_emails=stale,
                queued_emails=queued,
                queue_depth=depth,
                republishing_at_most=allowance,
            )
        total = 0
        while total < allowance:
            limit = min(REPUBLISH_BATCH, allowance - total)
            messages = await self._store.stale_queued(cutoff, limit)
            if not messages:
                break
            failed = await self._queue.publish(messages)
            total += len(messages) - len(failed)
            if len(messages) < limit or failed:
                break
        return total

    async def reconcile_once(self) -> None:
        expired = await self._store.expire_leases(utcnow())
        if expired:
            self._metrics.emails_unknown.inc(expired)
            log.warning("leases_expired", emails=expired)
        republished = await self.republish_stale(self._requeue_after)
        if republished:
            log.warning("queued_emails_republished", emails=republished)

    async def run(self, stop: asyncio.Event) -> None:
        self._heartbeats.register(LOOP_NAME, allowance=self._interval * 3 + 60)
        backoff = Backoff(maximum=60.0)
        try:
            while not stop.is_set():
                try:
                    await self.reconcile_once()
                    backoff.reset()
                    delay = self._interval
                except Exception as exc:  # keep going: the backends may come back
                    delay = backoff.next_delay()
                    log.warning("reconcile_failed", error=str(exc)[:300], retry_in=delay)
                self._heartbeats.beat(LOOP_NAME)
                await wait_or_stop(stop, delay)
        finally:
            self._heartbeats.unregister(LOOP_NAME)
