"""What happened after the send (``TrackingStore``): SES events, the brake's counts, the
delivery gauge.

``record_events`` takes a batch in one transaction of a few statements, whatever its
size: the events already stored (one read by message id), the emails they are about
(locked: one read by ``email_id`` tag, one by message id for the rest), the new events
(one multi-row INSERT), then their effects (one UPDATE of delivery columns, and only when
needed the ``unknown`` emails turned ``sent`` and the suppression upsert). The rules
(status forward only, detail text, what suppresses) are ``tracking`` and ``suppression``'s;
only their storage is here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import Queries
from delivery_server.adapters.store_sql.emails import SendRecord, record_late_sends
from delivery_server.adapters.store_sql.schema import DELIVERY_DETAIL_CHARS, email, event, job
from delivery_server.adapters.store_sql.suppressions import (
    run_retrying_conflicts,
    upsert_suppressions,
)
from delivery_server.models import (
    ACTIVE_EMAIL_STATUSES,
    BrakeCounts,
    DeliveryStatus,
    EmailStatus,
    EventOutcome,
    JobStatus,
    Suppression,
    SuppressionReason,
    TrackingEvent,
    utcnow,
)
from delivery_server.suppression import suppression_for
from delivery_server.tracking import (
    delivery_detail,
    delivery_status_for,
    is_permanent_bounce,
    moves_forward,
    resolves_unknown,
)

# Event types that stamp the first time they were seen, not the delivery status.
FIRST_SEEN = {"Open": "opened_at", "Click": "clicked_at"}
# Counting a big job's sent emails reads its whole index (~0.1 s for 500,000 on MariaDB):
# above this many sends a job's counts are reused for a few seconds. Numerator and
# denominator come from the same moment, so the rates are right, only that much older.
BRAKE_EXACT_BELOW = 10_000
BRAKE_RECOUNT_SECONDS = 5.0
# The delivery gauge covers jobs in flight and those finished this long ago at most.
RECENT_JOBS = timedelta(days=1)
MAX_PAUSED_REASON_CHARS = 1000

_MATCH_COLUMNS = (
    email.c.id,
    email.c.job_id,
    email.c.status,
    email.c.provider_message_id,
    email.c.delivery_status,
    email.c.delivery_detail,
    email.c.delivery_updated_at,
    email.c.opened_at,
    email.c.clicked_at,
)
_DELIVERY_COLUMNS = (
    "delivery_status",
    "delivery_detail",
    "delivery_updated_at",
    "opened_at",
    "clicked_at",
)
_Key = tuple[str, str, datetime]


@dataclass(slots=True)
class _Email:
    """An email an event is about, as the batch leaves it."""

    id: int
    job_id: int
    status: EmailStatus
    provider_message_id: str | None
    delivery_status: DeliveryStatus | None
    delivery_detail: str | None
    delivery_updated_at: datetime | None
    opened_at: datetime | None
    clicked_at: datetime | None
    changed: bool = False

    @classmethod
    def from_row(cls, row: sa.RowMapping) -> _Email:
        status = row["delivery_status"]
        return cls(
            id=row["id"],
            job_id=row["job_id"],
            status=EmailStatus(row["status"]),
            provider_message_id=row["provider_message_id"],
            delivery_status=None if status is None else DeliveryStatus(status),
            delivery_detail=row["delivery_detail"],
            delivery_updated_at=row["delivery_updated_at"],
            opened_at=row["opened_at"],
            clicked_at=row["clicked_at"],
        )

    @property
    def send_not_recorded(self) -> bool:
        """Still in the pipeline's hands with no send recorded: an event is early."""
        return self.status in ACTIVE_EMAIL_STATUSES and self.provider_message_id is None


@dataclass(slots=True)
class _Batch:
    """What recording a batch writes, gathered before any write."""

    now: datetime
    events: list[dict[str, Any]]
    sends: list[SendRecord]
    suppressions: list[Suppression]


class TrackingQueries(Queries):
    """SES events into delivery statuses; the brake's counts; the delivery gauge."""

    # Big jobs' brake counts, with when (monotonic) they were counted.
    _brake_counted: dict[int, tuple[float, BrakeCounts]]

    async def record_events(self, events: Sequence[TrackingEvent]) -> list[EventOutcome]:
        """Store each event once and apply it, in one transaction; one outcome per event
        (see ``ports.TrackingStore``)."""
        batch = [_naive_utc(e) for e in events]
        if not batch:
            return []
        return await run_retrying_conflicts(self._db, lambda conn: _record(conn, batch))

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

    async def count_by_delivery_status(self) -> dict[DeliveryStatus, int]:
        """Emails by delivery status (zero when absent) over the jobs processing or
        paused, or finished within ``RECENT_JOBS``: never the whole history."""

        async def read(conn: AsyncConnection) -> dict[DeliveryStatus, int]:
            recent = await conn.execute(
                sa.select(job.c.id).where(
                    sa.or_(
                        job.c.status.in_((JobStatus.PROCESSING, JobStatus.PAUSED)),
                        job.c.finished_at >= utcnow() - RECENT_JOBS,
                    )
                )
            )
            job_ids = list(recent.scalars())
            return await delivery_counts(conn, job_ids) if job_ids else {}

        found = await self._db.run(read, write=False)
        return {status: found.get(status, 0) for status in DeliveryStatus}


async def delivery_counts(conn: AsyncConnection, job_ids: list[int]) -> dict[DeliveryStatus, int]:
    """Emails of ``job_ids`` by delivery status (those without one left out): one
    GROUP BY over the (job, delivery status) index."""
    rows = await conn.execute(
        sa.select(email.c.delivery_status, sa.func.count())
        .where(email.c.job_id.in_(job_ids), email.c.delivery_status.is_not(None))
        .group_by(email.c.delivery_status)
    )
    return {DeliveryStatus(status): int(count) for status, count in rows}


async def _record(conn: AsyncConnection, events: list[TrackingEvent]) -> list[EventOutcome]:
    stored = await _stored_keys(conn, events)
    outcomes = [EventOutcome.DUPLICATE] * len(events)
    fresh: list[int] = []
    for position, tracked in enumerate(events):
        key = _key(tracked)
        if key not in stored:
            stored.add(key)  # the same event twice in one batch: the second is a duplicate
            fresh.append(position)
    emails = await _matching_emails(conn, [events[p] for p in fresh])
    batch = _Batch(now=utcnow(), events=[], sends=[], suppressions=[])
    for position, found in zip(fresh, emails, strict=True):
        outcomes[position] = _apply(events[position], found, batch)
    await _write(conn, batch, [found for found in _unique(emails) if found.changed])
    return outcomes


def _apply(tracked: TrackingEvent, found: _Email | None, batch: _Batch) -> EventOutcome:
    """Decide one event's outcome; gather its row and its effects into ``batch``."""
    if found is not None and found.send_not_recorded:
        return EventOutcome.EARLY
    batch.events.append(_event_row(tracked, found, batch.now))
    batch.suppressions += [
        Suppression(address=address, reason=reason, created_at=batch.now)
        for address, reason in suppression_for(tracked)
    ]
    if found is None:
        return EventOutcome.UNMATCHED
    if resolves_unknown(tracked) and found.status is EmailStatus.UNKNOWN:
        batch.sends.append(SendRecord(found.id, tracked.provider_message_id, tracked.occurred_at))
        found.status, found.provider_message_id = EmailStatus.SENT, tracked.provider_message_id
    status = delivery_status_for(tracked)
    if status is not None and moves_forward(found.delivery_status, status):
        found.delivery_status = status
        detail = delivery_detail(tracked)
        found.delivery_detail = None if detail is None else detail[:DELIVERY_DETAIL_CHARS]
        found.delivery_updated_at = tracked.occurred_at
        found.changed = True
    stamp = FIRST_SEEN.get(tracked.event_type)
    if stamp is not None and getattr(found, stamp) is None:
        setattr(found, stamp, tracked.occurred_at)
        found.changed = True
    return EventOutcome.RECORDED


async def _write(conn: AsyncConnection, batch: _Batch, changed: list[_Email]) -> None:
    if batch.events:
        await conn.execute(sa.insert(event), batch.events)
    if batch.sends:
        await record_late_sends(conn, batch.sends)
    if changed:
        await conn.execute(_delivery_update(changed))
    if batch.suppressions:
        await upsert_suppressions(conn, batch.suppressions)


async def _stored_keys(conn: AsyncConnection, events: list[TrackingEvent]) -> set[_Key]:
    message_ids = sorted({e.provider_message_id for e in events})
    rows = await conn.execute(
        sa.select(event.c.provider_message_id, event.c.event_type, event.c.occurred_at).where(
            event.c.provider_message_id.in_(message_ids)
        )
    )
    return {_key_of(*row) for row in rows}


def _key(tracked: TrackingEvent) -> _Key:
    return _key_of(tracked.provider_message_id, tracked.event_type, tracked.occurred_at)


def _key_of(message_id: str, event_type: str, occurred_at: datetime) -> _Key:
    # MariaDB's unique key compares text case-insensitively: so does this.
    return message_id.lower(), event_type.lower(), occurred_at


async def _matching_emails(
    conn: AsyncConnection, events: list[TrackingEvent]
) -> list[_Email | None]:
    """The email of each event (None when there is none), locked: by its ``email_id``
    tag when the tag names an email of the tagged job, else by provider message id."""
    if not events:
        return []
    by_id: dict[int, _Email] = {}
    tagged = sorted({e.email_id for e in events if e.email_id is not None})
    if tagged:
        by_id = {found.id: found for found in await _lock_emails(conn, email.c.id.in_(tagged))}
    matched: list[_Email | None] = [_by_tag(e, by_id) for e in events]
    untagged = sorted(
        {e.provider_message_id for e, m in zip(events, matched, strict=True) if m is None}
    )
    if untagged:
        by_message: dict[str, _Email] = {}
        for found in await _lock_emails(conn, email.c.provider_message_id.in_(untagged)):
            message_id = (found.provider_message_id or "").lower()
            # An email already matched by its tag is the same object, not a second copy.
            by_message.setdefault(message_id, by_id.get(found.id, found))
        matched = [
            m if m is not None else by_message.get(e.provider_message_id.lower())
            for e, m in zip(events, matched, strict=True)
        ]
    return matched


def _by_tag(tracked: TrackingEvent, by_id: dict[int, _Email]) -> _Email | None:
    found = by_id.get(tracked.email_id) if tracked.email_id is not None else None
    if found is None or (tracked.job_id is not None and tracked.job_id != found.job_id):
        return None  # not one of ours (another sender's tags): match by message id
    return found


async def _lock_emails(conn: AsyncConnection, condition: sa.ColumnElement[bool]) -> list[_Email]:
    rows = await conn.execute(
        sa.select(*_MATCH_COLUMNS).where(condition).order_by(email.c.id).with_for_update()
    )
    return [_Email.from_row(row) for row in rows.mappings()]


def _event_row(tracked: TrackingEvent, found: _Email | None, now: datetime) -> dict[str, Any]:
    reputation: SuppressionReason | None = None
    if is_permanent_bounce(tracked):
        reputation = SuppressionReason.HARD_BOUNCE
    elif delivery_status_for(tracked) is DeliveryStatus.COMPLAINED:
        reputation = SuppressionReason.COMPLAINT
    return {
        "email_id": None if found is None else found.id,
        # The matched email's job: an event matched by message id carries no tags.
        "job_id": tracked.job_id if found is None else found.job_id,
        "event_type": tracked.event_type,
        "provider_message_id": tracked.provider_message_id,
        "occurred_at": tracked.occurred_at,
        "received_at": now,
        "detail": tracked.detail or None,
        "reputation": reputation,
    }


def _delivery_update(changed: list[_Email]) -> sa.Update:
    """One UPDATE giving every changed email its delivery columns as the batch left them
    (the rows are locked: the values are final)."""

    def per_email(name: str) -> sa.Case[Any]:
        column = email.c[name]
        return sa.case(
            *((email.c.id == e.id, sa.literal(getattr(e, name), column.type)) for e in changed),
            else_=column,
        )

    return (
        sa.update(email)
        .where(email.c.id.in_([e.id for e in changed]))
        .values({name: per_email(name) for name in _DELIVERY_COLUMNS})
    )


def _unique(emails: list[_Email | None]) -> list[_Email]:
    seen: dict[int, _Email] = {}
    for found in emails:
        if found is not None:
            seen.setdefault(found.id, found)
    return list(seen.values())


async def _brake_counts(conn: AsyncConnection, job_ids: list[int]) -> dict[int, BrakeCounts]:
    existing = await conn.execute(sa.select(job.c.id).where(job.c.id.in_(job_ids)))
    sent = dict.fromkeys(existing.scalars(), 0)
    if not sent:
        return {}
    rows = await conn.execute(
        sa.select(email.c.job_id, sa.func.count())
        .where(email.c.job_id.in_(sorted(sent)), email.c.status == EmailStatus.SENT)
        .group_by(email.c.job_id)
    )
    sent.update({job_id: int(count) for job_id, count in rows})
    rows = await conn.execute(
        sa.select(event.c.job_id, event.c.reputation, sa.func.count(sa.distinct(event.c.email_id)))
        .where(event.c.job_id.in_(sorted(sent)), event.c.reputation.is_not(None))
        .group_by(event.c.job_id, event.c.reputation)
    )
    hits = {(job_id, reputation): int(count) for job_id, reputation, count in rows}
    return {
        job_id: BrakeCounts(
            sent=count,
            bounced=hits.get((job_id, SuppressionReason.HARD_BOUNCE), 0),
            complained=hits.get((job_id, SuppressionReason.COMPLAINT), 0),
        )
        for job_id, count in sent.items()
    }


def _naive_utc(tracked: TrackingEvent) -> TrackingEvent:
    """The event with ``occurred_at`` as naive UTC (how both databases store times, and
    so how a stored event's key compares)."""
    moment = tracked.occurred_at
    if moment.tzinfo is None:
        return tracked
    return dataclasses.replace(tracked, occurred_at=moment.astimezone(UTC).replace(tzinfo=None))
