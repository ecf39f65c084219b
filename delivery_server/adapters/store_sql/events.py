"""Recording a batch of SES events (``TrackingStore.record_events``), in one transaction
of a few statements whatever the batch's size: the events already stored (one read by
message id), the emails they are about (locked: one read by ``email_id`` tag, one by
message id for the rest), the new events (one multi-row INSERT), then their effects (one
UPDATE of the delivery columns, and only when needed the ``unknown`` emails turned
``sent`` and the suppression upsert). The rules (status forward only, detail text, what
suppresses) are ``tracking`` and ``suppression``'s; only their storage is here.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.schema import DELIVERY_DETAIL_CHARS, email, event
from delivery_server.adapters.store_sql.send_records import SendRecord, record_late_sends
from delivery_server.adapters.store_sql.suppressions import upsert_suppressions
from delivery_server.models import (
    ACTIVE_EMAIL_STATUSES,
    DeliveryStatus,
    EmailStatus,
    EventOutcome,
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
# The UPDATE is built for a number of emails rounded up to a multiple of SIZE_STEP, the
# rest padded with PAD_ID (no email has it): one statement per size, with up to 200
# emails a batch, held 81 MB of compiled SQL (each grows with its size), one per step
# 6 MB. Kept built: one per step (up to 256 emails) and set of columns changed (a few:
# the status columns, the engagement stamps, both).
SIZE_STEP = 16
PAD_ID = -1  # ids are positive (a legacy table may have an id 0)
CACHED_UPDATES = 4 * (256 // SIZE_STEP)

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
_STATUS_COLUMNS = ("delivery_status", "delivery_detail", "delivery_updated_at")
_DELIVERY_COLUMNS = (*_STATUS_COLUMNS, *FIRST_SEEN.values())
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
    changed: set[str] = dataclasses.field(default_factory=set)  # delivery columns

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


async def record_batch(conn: AsyncConnection, events: list[TrackingEvent]) -> list[EventOutcome]:
    """Store each event once and apply it; one outcome per event, in order. A concurrent
    batch that stored one of these events first makes the INSERT fail with an
    ``IntegrityError``: run the transaction again (it then finds the event stored)."""
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
        found.changed.update(_STATUS_COLUMNS)
    stamp = FIRST_SEEN.get(tracked.event_type)
    if stamp is not None and getattr(found, stamp) is None:
        setattr(found, stamp, tracked.occurred_at)
        found.changed.add(stamp)
    return EventOutcome.RECORDED


async def _write(conn: AsyncConnection, batch: _Batch, changed: list[_Email]) -> None:
    if batch.events:
        await conn.execute(sa.insert(event), batch.events)
    if batch.sends:
        await record_late_sends(conn, batch.sends)
    if changed:
        await conn.execute(*_delivery_update(changed))
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


def _delivery_update(changed: list[_Email]) -> tuple[sa.Update, dict[str, Any]]:
    """One UPDATE giving every changed email its delivery columns as the batch left them
    (the rows are locked: the values are final). Only the columns some email changed are
    set: a batch of deliveries and bounces leaves the engagement stamps out, and with
    them four of each email's eleven parameters (each a value for the driver to escape)."""
    columns = tuple(name for name in _DELIVERY_COLUMNS if any(name in e.changed for e in changed))
    params: dict[str, Any] = {}
    for n, found in enumerate(changed):
        params[f"b_id{n}"] = found.id
        params.update({f"b_{name}{n}": getattr(found, name) for name in columns})
    size = -(-len(changed) // SIZE_STEP) * SIZE_STEP
    for n in range(len(changed), size):  # matches no row, so no CASE branch either
        params[f"b_id{n}"] = PAD_ID
        params.update({f"b_{name}{n}": None for name in columns})
    return _delivery_statement(size, columns), params


@functools.lru_cache(maxsize=CACHED_UPDATES)
def _delivery_statement(size: int, columns: tuple[str, ...]) -> sa.Update:
    """The UPDATE of ``columns`` for ``size`` emails, built once per shape: building its
    CASEs took longer than running it (docs/benchmarks.md)."""
    ids = [sa.bindparam(f"b_id{n}", type_=sa.BigInteger) for n in range(size)]

    def per_email(name: str) -> sa.Case[Any]:
        column = email.c[name]
        values = [sa.bindparam(f"b_{name}{n}", type_=column.type) for n in range(size)]
        return sa.case(*zip((email.c.id == i for i in ids), values, strict=True), else_=column)

    return (
        sa.update(email)
        .where(email.c.id.in_(ids))
        .values({name: per_email(name) for name in columns})
    )


def _unique(emails: list[_Email | None]) -> list[_Email]:
    seen: dict[int, _Email] = {}
    for found in emails:
        if found is not None:
            seen.setdefault(found.id, found)
    return list(seen.values())


def naive_utc(tracked: TrackingEvent) -> TrackingEvent:
    """The event with ``occurred_at`` as naive UTC (how both databases store times, and
    so how a stored event's key compares)."""
    moment = tracked.occurred_at
    if moment.tzinfo is None:
        return tracked
    return dataclasses.replace(tracked, occurred_at=moment.astimezone(UTC).replace(tzinfo=None))
