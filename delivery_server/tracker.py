"""The tracker: SES events from the events queue into delivery statuses (DESIGN §2, §5).

A few fetchers long-poll the events queue (SQS in production, the in-process queue in
embedded mode, where the outbox reports its deliveries). Each batch is parsed
(``tracking.parse_event_message``: SNS envelope, raw delivery or EventBridge) and recorded
in one store call, which stores each event once and applies it: delivery status forward
only, suppression, ``unknown`` emails turned ``sent`` by SES's own ``Send`` events. Then:

* recorded, duplicate and unmatched events are deleted from the queue;
* an *early* event (its email's send record is not committed yet) stays in the queue and
  comes back a little later (sooner the first time), as an SQS redelivery would bring it;
* a malformed message is logged without its content and counted; it is deleted once it
  has been received ``max_receives`` times (SQS's redrive to a dead-letter queue may take
  it first), so it never blocks the others;
* jobs that got bounces or complaints are judged by the reputation brake (``brake``) and
  paused by themselves when a rate reaches its threshold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from delivery_server.brake import BrakeThresholds, judge
from delivery_server.errors import MalformedEventError
from delivery_server.heartbeats import Heartbeats
from delivery_server.loops import wait_or_stop
from delivery_server.metrics import Metrics
from delivery_server.models import Delivery, EventOutcome, TrackingEvent
from delivery_server.ports import Queue, TrackingStore
from delivery_server.retry import compute_backoff
from delivery_server.tracking import parse_event_message

log = structlog.get_logger(__name__)

RECEIVE_BATCH = 10  # the most SQS hands out per ReceiveMessage
# Event types that move a job's bounce or complaint rate: only these wake the brake.
BRAKE_EVENTS = frozenset({"Bounce", "Complaint"})


class Tracker:
    """Consumes the events queue until ``stop`` is set."""

    def __init__(
        self,
        queue: Queue,
        recorder: EventRecorder,
        heartbeats: Heartbeats,
        metrics: Metrics,
        *,
        fetchers: int = 4,
        wait_seconds: float = 20.0,
        visibility_timeout: int = 60,
        early_retry_seconds: int = 2,
        max_receives: int = 5,
    ) -> None:
        self._queue = queue
        self._recorder = recorder
        self._heartbeats = heartbeats
        self._metrics = metrics
        self._fetchers = fetchers
        self._wait_seconds = wait_seconds
        self._visibility_timeout = visibility_timeout
        self._early_retry_seconds = early_retry_seconds
        self._max_receives = max_receives

    async def run(self, stop: asyncio.Event) -> None:
        """Run the fetchers; return when ``stop`` is set and the batches under way are done."""
        async with asyncio.TaskGroup() as group:
            for number in range(self._fetchers):
                group.create_task(self._fetch(f"tracker-{number}", stop))

    async def _fetch(self, loop_name: str, stop: asyncio.Event) -> None:
        # A long poll may take wait_seconds; allow two of them before calling it stuck.
        self._heartbeats.register(loop_name, allowance=2 * self._wait_seconds + 30)
        failures = 0
        try:
            while not stop.is_set():
                try:
                    deliveries = await self._queue.receive(
                        RECEIVE_BATCH, self._wait_seconds, self._visibility_timeout
                    )
                    await self.handle(deliveries)
                except Exception as exc:  # a failing backend: back off, keep the loop alive
                    failures += 1
                    log.warning("tracker_batch_failed", error=type(exc).__name__)
                    if await wait_or_stop(stop, compute_backoff(failures, base=0.5, cap=30.0)):
                        return
                else:
                    failures = 0
                self._heartbeats.beat(loop_name)
        finally:
            self._heartbeats.unregister(loop_name)

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        """Parse, record and settle one received batch (also used by tests directly)."""
        done: list[str] = []
        parsed: list[tuple[Delivery, TrackingEvent]] = []
        for delivery in deliveries:
            try:
                parsed.append((delivery, parse_event_message(delivery.body)))
            except MalformedEventError as exc:
                self._metrics.event_outcomes.labels(outcome="malformed").inc()
                log.warning(
                    "event_malformed", reason=str(exc), receive_count=delivery.receive_count
                )
                if delivery.receive_count >= self._max_receives:
                    done.append(delivery.receipt)
        if parsed:
            outcomes = await self._recorder.record([event for _, event in parsed])
            for (delivery, _), outcome in zip(parsed, outcomes, strict=True):
                if outcome is EventOutcome.EARLY:
                    retry = self._early_retry(delivery.receive_count)
                    await self._queue.change_visibility(delivery.receipt, retry)
                else:
                    done.append(delivery.receipt)
        if done:
            await self._queue.delete(done)

    def _early_retry(self, receive_count: int) -> int:
        # Early events are usually a moment ahead of their send record (a batch not yet
        # committed): look again soon, then less and less often.
        delay = compute_backoff(receive_count, base=self._early_retry_seconds, cap=300)
        return int(delay)


class EventRecorder:
    """Records parsed events (from the events queue or ``POST /ses/events``), counts them,
    and pauses the jobs whose bounce or complaint rate the brake finds too high."""

    def __init__(self, store: TrackingStore, metrics: Metrics, brake: BrakeThresholds) -> None:
        self._store = store
        self._metrics = metrics
        self._brake = brake

    async def record(self, events: Sequence[TrackingEvent]) -> list[EventOutcome]:
        """Record ``events``; one outcome per event, in order."""
        outcomes = await self._store.record_events(events)
        braked_jobs: set[int] = set()
        for event, outcome in zip(events, outcomes, strict=True):
            self._metrics.event_outcomes.labels(outcome=outcome.value).inc()
            if outcome is EventOutcome.RECORDED:
                self._metrics.count_event(event.event_type)
                if event.event_type in BRAKE_EVENTS and event.job_id is not None:
                    braked_jobs.add(event.job_id)
        if braked_jobs:
            await self._apply_brake(braked_jobs)
        return outcomes

    async def _apply_brake(self, job_ids: set[int]) -> None:
        """Pause every job among ``job_ids`` whose bounce or complaint rate is too high."""
        for job_id, counts in (await self._store.brake_counts(sorted(job_ids))).items():
            verdict = judge(counts.sent, counts.bounced, counts.complained, self._brake)
            if verdict is None or not await self._store.pause_job(job_id, verdict.reason):
                continue
            self._metrics.jobs_braked.inc()
            log.warning(
                "job_braked",
                job_id=job_id,
                bounce_rate=round(verdict.bounce_rate, 4),
                complaint_rate=round(verdict.complaint_rate, 4),
                sent=counts.sent,
            )
