"""The reconciler: finds emails that fell between the cracks (DESIGN §4).

* ``sending`` past its lease: the task that held it died, maybe mid-send → ``unknown``
  (never resent blindly; ``restart-failed --include-unknown`` resends on an operator's word).
* ``queued`` untouched for ``requeue_after``: its message was probably lost (queue purged,
  dead-lettered) → published again. A duplicate message is harmless: claims are conditional.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from delivery_server.health import Heartbeats
from delivery_server.loops import Backoff, wait_or_stop
from delivery_server.metrics import Metrics
from delivery_server.models import utcnow
from delivery_server.ports import Queue, ReconcilerStore

log = structlog.get_logger(__name__)

LOOP_NAME = "reconciler"
REPUBLISH_BATCH = 500


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
        """Publish again every queued email untouched for ``older_than_seconds``."""
        total = 0
        while True:
            cutoff = utcnow() - timedelta(seconds=older_than_seconds)
            messages = await self._store.stale_queued(cutoff, REPUBLISH_BATCH)
            if not messages:
                return total
            failed = await self._queue.publish(messages)
            total += len(messages) - len(failed)
            if len(messages) < REPUBLISH_BATCH or failed:
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
