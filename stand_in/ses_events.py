"""SES event publishing, simulated: every accepted send's events land on an SQS queue.

As SES → SNS → SQS would deliver them: each message is an SNS ``Notification`` envelope
whose ``Message`` is the SES event's JSON (built by the product's own
``ses_event_payloads``, so both speak one format). ``Send`` first, then ``Delivery`` or what
the SES mailbox simulator's addresses ask for; a configured bounce rate turns that
fraction of the accepted emails into permanent bounces, drawn from a seeded generator in
acceptance order; an open rate adds an ``Open`` after that fraction of the deliveries
(open tracking: a third event per email).

The SES handler only appends the accepted email to a list: the events are built and
enqueued a few milliseconds later, in batches, off the request path (the same event loop
answers both APIs, and encoding the JSON twice per event is the largest cost). The
signature is a placeholder: only SNS's key makes a real one, and an SQS subscription is
trusted without it.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from datetime import UTC, datetime

from delivery_server.adapters.ses_event_payloads import (
    AcceptedMail,
    outcome_events,
    sns_notification,
)
from stand_in.ses_api import SentEmail
from stand_in.sqs_api import ACCOUNT_ID, SqsApi
from stand_in.sqs_queue import SimQueue, uuid_sequence

DEFAULT_TOPIC_ARN = f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:ses-events"
PLACEHOLDER_SIGNATURE = "c3RhbmQtaW4gKG5vdCBzaWduZWQp"  # base64 of "stand-in (not signed)"
FLUSH_DELAY = 0.02  # seconds an accepted email waits for its batch: latency, not cost
MAX_BATCH = 500  # emails per flush: bounds how long one flush holds the loop
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def check_options(queue_name: str | None, bounce_rate: float, open_rate: float = 0.0) -> None:
    """Raise ``ValueError`` naming the option when the events options make no sense."""
    if queue_name is not None and not _QUEUE_NAME.match(queue_name):
        raise ValueError(
            f"events queue name {queue_name!r} must be 1 to 80 letters, digits, - or _"
        )
    if not 0.0 <= bounce_rate <= 1.0:
        raise ValueError(f"bounce rate {bounce_rate} must be between 0 and 1")
    if bounce_rate and queue_name is None:
        raise ValueError("a bounce rate needs an events queue to report the bounces")
    if not 0.0 <= open_rate <= 1.0:
        raise ValueError(f"open rate {open_rate} must be between 0 and 1")
    if open_rate and queue_name is None:
        raise ValueError("an open rate needs an events queue to report the opens")


class SesEventPublisher:
    """Publishes the SES events of accepted emails into one queue of the stand-in's SQS."""

    def __init__(
        self,
        sqs: SqsApi,
        queue_name: str,
        bounce_rate: float = 0.0,
        seed: int | None = None,
        topic_arn: str = DEFAULT_TOPIC_ARN,
        open_rate: float = 0.0,
    ) -> None:
        check_options(queue_name, bounce_rate, open_rate)
        self.queue_name = queue_name
        self.bounce_rate = bounce_rate
        self.open_rate = open_rate
        self.topic_arn = topic_arn
        self.counts: Counter[str] = Counter()
        self._sqs = sqs
        self._seed = seed
        self._rng = random.Random(seed)
        # Opens drawn apart: adding them leaves a seed's bounces where they were.
        self._open_rng = random.Random(f"open-{seed}")
        self._pending: list[tuple[SentEmail, str | None]] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._next_notification_id = uuid_sequence()
        self.ensure_queue()

    def ensure_queue(self) -> SimQueue:
        """The events queue, created when missing (at start-up and after a reset)."""
        queue = self._sqs.queues.get(self.queue_name)
        if queue is None:
            queue = self._sqs.queues[self.queue_name] = SimQueue(self.queue_name)
        return queue

    def accepted(self, email: SentEmail, configuration_set: str | None) -> None:
        """Note an accepted email; its events follow within ``FLUSH_DELAY``."""
        self._pending.append((email, configuration_set))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._flush)

    def flush(self) -> None:
        """Publish the events of every email accepted so far, now."""
        self._cancel_timer()
        while self._pending:
            self._publish(self._take(MAX_BATCH))

    def reset(self) -> None:
        """Forget pending emails and counts, restart the bounce draws, recreate the queue."""
        self._cancel_timer()
        self._pending.clear()
        self.counts.clear()
        self._rng.seed(self._seed)
        self._open_rng.seed(f"open-{self._seed}")
        self.ensure_queue()

    def close(self) -> None:
        self._cancel_timer()

    # -- internals ---------------------------------------------------------------------

    def _flush(self) -> None:
        self._timer = None
        self._publish(self._take(MAX_BATCH))
        if self._pending:  # a burst: the rest in the next loop iteration, not all at once
            self._timer = asyncio.get_running_loop().call_soon(self._flush)

    def _take(self, count: int) -> list[tuple[SentEmail, str | None]]:
        batch, self._pending = self._pending[:count], self._pending[count:]
        return batch

    def _publish(self, batch: list[tuple[SentEmail, str | None]]) -> None:
        queue = self._sqs.queues.get(self.queue_name)
        # Naive UTC throughout: the payload builders then format times without converting.
        now = datetime.now(UTC).replace(tzinfo=None)
        for email, configuration_set in batch:
            bounce = self.bounce_rate > 0 and self._rng.random() < self.bounce_rate
            opened = self.open_rate > 0 and self._open_rng.random() < self.open_rate
            if queue is None:  # a client deleted it: SNS would fail to deliver, too
                self.counts["dropped"] += 1
                continue
            mail = AcceptedMail(
                message_id=email.message_id,
                source=email.from_address,
                destination=email.to,
                sent_at=datetime.fromtimestamp(email.accepted_at, UTC).replace(tzinfo=None),
                tags=email.tags,
                configuration_set=configuration_set,
            )
            for event in outcome_events(mail, now, bounce_all=bounce, opened=opened):
                queue.send(self._envelope(event, now))
                self.counts[event["eventType"]] += 1
            self.counts["emails"] += 1
            self.counts["bounced_by_rate"] += bounce

    def _envelope(self, event: dict[str, object], now: datetime) -> str:
        notification = sns_notification(
            json.dumps(event, separators=(",", ":")),
            self.topic_arn,
            self._next_notification_id(),
            now,
            PLACEHOLDER_SIGNATURE,
        )
        return json.dumps(notification, separators=(",", ":"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
