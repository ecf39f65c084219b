"""The tracker: SES events from the events queue into delivery statuses (DESIGN §2, §5).

A few fetchers long-poll the events queue (SQS in production, the in-process queue in
embedded mode, where the outbox reports its deliveries). Each received batch is parsed
(``tracking.parse_event_message``: SNS envelope, raw delivery or EventBridge) and, with the
batches the other fetchers received meanwhile (up to ``RECEIVES_PER_RECORD``, waiting at
most ``record_delay`` for them), recorded in one store call, which stores each event once
and applies it: delivery status forward only, suppression, ``unknown`` emails turned
``sent`` by SES's own ``Send`` events. The fetchers go on receiving meanwhile, up to
``RECEIVES_IN_FLIGHT`` batches not yet settled. Then:

* recorded, duplicate and unmatched events are deleted from the queue (``settlement``'s
  batched deletes: ten receipts a request, the fetchers not waiting for them);
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
import contextlib
from collections import Counter
from collections.abc import Sequence

import structlog

from delivery_server.batching import Batcher
from delivery_server.brake import BrakeThresholds, judge
from delivery_server.errors import MalformedEventError
from delivery_server.heartbeats import Heartbeats
from delivery_server.loops import wait_or_stop
from delivery_server.metrics import Metrics
from delivery_server.models import Delivery, EventOutcome, TrackingEvent
from delivery_server.ports import Queue, TrackingStore
from delivery_server.retry import compute_backoff
from delivery_server.settlement import Settlements
from delivery_server.tracking import parse_event_message

log = structlog.get_logger(__name__)

RECEIVE_BATCH = 10  # the most SQS hands out per ReceiveMessage
# Receives recorded together, at most (so up to 200 events a transaction), and how long a
# partial group waits for more: a transaction's fixed cost (its statements, the brake's
# count) then weighs on up to 200 events, not on the ten or fewer of one receive (SES
# events are minutes late anyway; docs/benchmarks.md has the figures).
RECEIVES_PER_RECORD = 20
RECORD_DELAY = 0.5
# Receives whose events are not settled yet, at most: one group being recorded while the
# next fills up. The fetchers wait for a slot before receiving more.
RECEIVES_IN_FLIGHT = 2 * RECEIVES_PER_RECORD
# Event types that move a job's bounce or complaint rate: only these wake the brake.
BRAKE_EVENTS = frozenset({"Bounce", "Complaint"})

_Parsed = list[tuple[Delivery, TrackingEvent]]


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
        record_delay: float = RECORD_DELAY,
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
        self._record_delay = record_delay
        self._failures = 0  # batches failed in a row: the fetchers back off meanwhile

    async def run(self, stop: asyncio.Event) -> None:
        """Run the fetchers; return when ``stop`` is set and the batches under way are done."""
        # Deletes leave as soon as a group is recorded: its receipts are posted together.
        settlements = Settlements(self._queue, delete_delay=0)
        records: Batcher[_Parsed, None] = Batcher(
            lambda batches: self._record(batches, settlements),
            max_size=RECEIVES_PER_RECORD,
            max_delay=self._record_delay,
        )
        slots = asyncio.Semaphore(RECEIVES_IN_FLIGHT)
        try:
            async with asyncio.TaskGroup() as group:
                for number in range(self._fetchers):
                    name = f"tracker-{number}"
                    group.create_task(self._fetch(name, stop, slots, records, settlements))
        finally:
            await records.close()
            await settlements.close()

    async def _fetch(
        self,
        loop_name: str,
        stop: asyncio.Event,
        slots: asyncio.Semaphore,
        records: Batcher[_Parsed, None],
        settlements: Settlements,
    ) -> None:
        # A long poll may take wait_seconds; allow two of them before calling it stuck.
        self._heartbeats.register(loop_name, allowance=2 * self._wait_seconds + 30)
        try:
            async with asyncio.TaskGroup() as handlers:
                while not stop.is_set():
                    if self._failures and await wait_or_stop(stop, self._backoff()):
                        return
                    await slots.acquire()
                    deliveries = await self._receive()
                    parsed = await self._parse(deliveries, settlements)
                    if parsed:  # recorded with other receives; the slot is freed after
                        handlers.create_task(self._submit(parsed, records, slots))
                    else:
                        slots.release()
                    self._heartbeats.beat(loop_name)
                    # A partial receive: the queue is (nearly) drained and its events wait
                    # for company in ``records`` anyway. Pausing lets the next receive come
                    # back fuller, instead of four long polls taking a few messages each.
                    if 0 < len(deliveries) < RECEIVE_BATCH and self._record_delay:
                        await wait_or_stop(stop, self._record_delay)
        finally:
            self._heartbeats.unregister(loop_name)

    async def _receive(self) -> list[Delivery]:
        try:
            deliveries = await self._queue.receive(
                RECEIVE_BATCH, self._wait_seconds, self._visibility_timeout
            )
        except Exception as exc:  # a failing backend: back off, keep the loop alive
            self._failed(exc)
            return []
        if not deliveries:  # the queue answers and nothing is pending
            self._failures = 0
        return deliveries

    async def _parse(self, deliveries: Sequence[Delivery], settlements: Settlements) -> _Parsed:
        parsed: _Parsed = []
        for delivery in deliveries:
            try:
                parsed.append((delivery, parse_event_message(delivery.body)))
            except MalformedEventError as exc:
                self._metrics.event_outcomes.labels(outcome="malformed").inc()
                log.warning(
                    "event_malformed", reason=str(exc), receive_count=delivery.receive_count
                )
                if delivery.receive_count >= self._max_receives:
                    await settlements.of(delivery).delete()
        return parsed

    async def _submit(
        self, parsed: _Parsed, records: Batcher[_Parsed, None], slots: asyncio.Semaphore
    ) -> None:
        # A failed group is logged and counted once, by ``_record``; its messages stay
        # hidden and come back after their visibility timeout.
        try:
            with contextlib.suppress(Exception):
                await records.submit(parsed)
        finally:
            slots.release()

    async def _record(self, batches: list[_Parsed], settlements: Settlements) -> list[None]:
        """Record the events of several receives in one call, then settle each message."""
        parsed = [pair for batch in batches for pair in batch]
        try:
            outcomes = await self._recorder.record([event for _, event in parsed])
        except Exception as exc:
            self._failed(exc)
            raise
        self._failures = 0
        early = []
        for (delivery, _), outcome in zip(parsed, outcomes, strict=True):
            if outcome is EventOutcome.EARLY:
                retry = self._early_retry(delivery.receive_count)
                early.append(self._queue.change_visibility(delivery.receipt, retry))
            else:
                await settlements.of(delivery).delete()
        # A visibility change that fails leaves its message to the visibility timeout.
        for failure in await asyncio.gather(*early, return_exceptions=True):
            if isinstance(failure, Exception):
                log.warning("early_event_not_deferred", error=type(failure).__name__)
        return [None] * len(batches)

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        log.warning("tracker_batch_failed", error=type(exc).__name__)

    def _backoff(self) -> float:
        return compute_backoff(self._failures, base=0.5, cap=30.0)

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
        for outcome, count in Counter(outcomes).items():  # one label lookup per outcome
            self._metrics.event_outcomes.labels(outcome=outcome.value).inc(count)
        braked_jobs: set[int] = set()
        for event, outcome in zip(events, outcomes, strict=True):
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
