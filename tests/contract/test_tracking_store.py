"""The ``TrackingStore`` and ``SuppressionStore`` contract, on MariaDB and on SQLite.

Same fixtures as ``test_store.py``: every test gets a freshly migrated database of each
backend. Events are ``TrackingEvent``s as ``tracking.parse_event_message`` makes them.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from delivery_server.adapters.store_sql import SqlStore, upgrade_schema
from delivery_server.adapters.store_sql.emails import LOCK_QUEUED
from delivery_server.adapters.store_sql.engine import create_engine
from delivery_server.adapters.store_sql.migrate import VERSION_TABLE, alembic_config
from delivery_server.adapters.store_sql.schema import email as email_table
from delivery_server.adapters.store_sql.schema import event as event_table
from delivery_server.adapters.store_sql.schema import job as job_table
from delivery_server.adapters.store_sql.schema import suppression as suppression_table
from delivery_server.adapters.store_sql.suppressions import SUPPRESSED
from delivery_server.models import (
    BrakeCounts,
    ClaimOutcome,
    DeliveryStatus,
    EventOutcome,
    Job,
    JobStatus,
    NewEmail,
    Suppression,
    SuppressionReason,
    TrackingEvent,
    utcnow,
)
from tests.contract.conftest import STORE_BACKENDS
from tests.contract.test_store import (  # the fixtures and helpers of the Store suite
    email_row,
    processing_job,
    queue_all,
)
from tests.support.migrations import head_revision

pytestmark = pytest.mark.timeout(60)

RECORDED, DUPLICATE = EventOutcome.RECORDED, EventOutcome.DUPLICATE
UNMATCHED, EARLY = EventOutcome.UNMATCHED, EventOutcome.EARLY
PERMANENT = {"bounceType": "Permanent", "bounceSubType": "General"}
TRANSIENT = {"bounceType": "Transient", "bounceSubType": "MailboxFull"}


def ses(
    event_type: str,
    message_id: str,
    at: datetime,
    email_id: int | None = None,
    job_id: int | None = None,
    recipients: tuple[str, ...] = (),
    **detail: Any,
) -> TrackingEvent:
    bounce_type = detail.get("bounceType") if event_type == "Bounce" else None
    return TrackingEvent(
        event_type, message_id, at, email_id, job_id, recipients, bounce_type, detail
    )


async def sent_job(store: SqlStore, count: int) -> tuple[Job, list[int]]:
    """A processing job whose emails are all sent, with message ids ``ses-<email id>``."""
    job, ids = await processing_job(store, count)
    await queue_all(store, job.id)
    for email_id in ids:
        assert (await store.claim(email_id, 60)).outcome is ClaimOutcome.CLAIMED
        await store.mark_sent(email_id, f"ses-{email_id}", utcnow())
    return job, ids


async def stored_events(raw: AsyncEngine) -> list[sa.RowMapping]:
    async with raw.connect() as conn:
        query = sa.select(event_table).order_by(event_table.c.id)
        return list((await conn.execute(query)).mappings())


# --- migration ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", STORE_BACKENDS)
async def test_a_database_at_0002_gets_the_tracking_schema_and_keeps_its_rows(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(backend)
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0002"))
            now = utcnow()
            job_values = {"name": "old", "status": "completed", "template_name": "t"}
            await conn.execute(
                sa.text(
                    "INSERT INTO delivery_job (name, status, template_name, from_address,"
                    " created_at) VALUES (:name, :status, :template_name, 'a@b.c', :now)"
                ),
                {**job_values, "now": now},
            )
        await upgrade_schema(url)
        await upgrade_schema(url)  # ``db upgrade`` again: a no-op

        def inspect(c: sa.Connection) -> dict[str, set[str]]:
            inspector = sa.inspect(c)
            names = ("delivery_job", "delivery_email", "delivery_event", "delivery_suppression")
            return {t: {col["name"] for col in inspector.get_columns(t)} for t in names}

        async with engine.connect() as conn:
            columns = await conn.run_sync(inspect)
            version_query = sa.select(sa.column("version_num")).select_from(sa.table(VERSION_TABLE))
            version = await conn.scalar(version_query)
            kept = await conn.scalar(sa.text("SELECT name FROM delivery_job"))
    finally:
        await engine.dispose()
    assert version == head_revision()
    assert kept == "old"
    assert "paused_reason" in columns["delivery_job"]
    assert {
        "delivery_status", "delivery_detail", "delivery_updated_at", "opened_at", "clicked_at"
    } <= columns["delivery_email"]  # fmt: skip
    assert {
        "id", "email_id", "job_id", "event_type", "provider_message_id", "occurred_at",
        "received_at", "detail",
    } <= columns["delivery_event"]  # fmt: skip
    assert {"address", "reason", "created_at", "expires_at", "note"} <= columns[
        "delivery_suppression"
    ]


# --- recording events --------------------------------------------------------------------


async def test_every_event_is_stored_once(store: SqlStore, raw: AsyncEngine) -> None:
    job, (first, second) = await sent_job(store, 2)
    at = utcnow()
    events = [
        ses("Send", f"ses-{first}", at, first, job.id),
        ses("Delivery", f"ses-{first}", at + timedelta(seconds=2), first, job.id),
        ses("Delivery", f"ses-{first}", at + timedelta(seconds=2), first, job.id),  # again
        ses("Delivery", f"ses-{second}", at, second, job.id),
    ]
    assert await store.record_events(events) == [RECORDED, RECORDED, DUPLICATE, RECORDED]
    assert await store.record_events(events) == [DUPLICATE] * 4  # SQS redelivered them
    assert await store.record_events([]) == []
    rows = await stored_events(raw)
    assert [(r["email_id"], r["job_id"], r["event_type"]) for r in rows] == [
        (first, job.id, "Send"),
        (first, job.id, "Delivery"),
        (second, job.id, "Delivery"),
    ]
    assert rows[1]["occurred_at"] == at + timedelta(seconds=2)  # microseconds kept
    assert rows[1]["received_at"] >= at


async def test_trackers_recording_the_same_events_at_once_store_each_once(
    store: SqlStore, other_store: SqlStore, raw: AsyncEngine
) -> None:
    _, ids = await sent_job(store, 3)
    at = utcnow()
    events = [ses("Delivery", f"ses-{i}", at) for i in ids] + [ses("Open", "elsewhere", at)]
    outcomes = await asyncio.gather(*(s.record_events(events) for s in [store, other_store] * 2))
    for position in range(len(events)):
        seen = sorted(outcome[position] for outcome in outcomes)
        assert seen.count(DUPLICATE) == 3, seen
    assert len(await stored_events(raw)) == len(events)


async def test_delivery_status_only_moves_forward(store: SqlStore, raw: AsyncEngine) -> None:
    job, (delivered, bounced, complained) = await sent_job(store, 3)
    at = utcnow()
    smtp = {"smtpResponse": "250 2.6.0 Message received"}
    delay = {"delayType": "MailboxFull"}
    await store.record_events(
        [
            ses("Delivery", f"ses-{delivered}", at, delivered, **smtp),
            ses("DeliveryDelay", f"ses-{delivered}", at - timedelta(seconds=5), **delay),
            ses("Bounce", f"ses-{bounced}", at, bounced, **PERMANENT),
            ses("DeliveryDelay", f"ses-{complained}", at, complained, **delay),
        ]
    )
    await store.record_events(  # later batches, in the order SES happened to send them
        [
            ses("Delivery", f"ses-{bounced}", at + timedelta(seconds=1), bounced, **smtp),
            ses("Delivery", f"ses-{complained}", at + timedelta(seconds=1), complained, **smtp),
        ]
    )
    await store.record_events(
        [ses("Complaint", f"ses-{complained}", at + timedelta(seconds=9), complained)]
    )

    rows = {i: await email_row(raw, i) for i in (delivered, bounced, complained)}
    delivery = {i: (r["delivery_status"], r["delivery_detail"]) for i, r in rows.items()}
    assert delivery == {
        delivered: ("delivered", "250 2.6.0"),
        bounced: ("bounced", "Permanent/General"),
        complained: ("complained", None),
    }
    assert rows[delivered]["delivery_updated_at"] == at
    assert rows[complained]["delivery_updated_at"] == at + timedelta(seconds=9)
    assert {r["status"] for r in rows.values()} == {"sent"}  # the pipeline's word stays
    summary = await store.job_summary(job.id)
    assert summary.delivery_counts == {
        DeliveryStatus.DELAYED: 0,
        DeliveryStatus.DELIVERED: 1,
        DeliveryStatus.REJECTED: 0,
        DeliveryStatus.BOUNCED: 1,
        DeliveryStatus.COMPLAINED: 1,
    }


async def test_opens_and_clicks_stamp_their_first_time_not_the_status(
    store: SqlStore, raw: AsyncEngine
) -> None:
    _, (email_id,) = await sent_job(store, 1)
    at = utcnow()
    message = f"ses-{email_id}"
    await store.record_events([ses("Open", message, at), ses("Click", message, at)])
    later = at + timedelta(minutes=1)
    again = [ses("Open", message, later), ses("Click", message, later)]
    assert await store.record_events(again) == [RECORDED, RECORDED]
    row = await email_row(raw, email_id)
    assert (row["opened_at"], row["clicked_at"], row["delivery_status"]) == (at, at, None)


async def test_an_event_before_its_send_record_is_early_and_not_stored(
    store: SqlStore, raw: AsyncEngine
) -> None:
    job, (sending, queued) = await processing_job(store, 2)
    await queue_all(store, job.id)
    assert (await store.claim(sending, 60)).outcome is ClaimOutcome.CLAIMED
    at = utcnow()
    events = [
        ses("Send", "ses-new", at, sending, job.id),
        ses("Delivery", "ses-other", at, queued, job.id),
    ]
    assert await store.record_events(events) == [EARLY, EARLY]
    assert await stored_events(raw) == []

    await store.mark_sent(sending, "ses-new", at)  # the consumer's record lands
    assert await store.record_events(events[:1]) == [RECORDED]  # redelivered by SQS
    assert (await email_row(raw, sending))["status"] == "sent"


async def test_unmatched_events_are_kept_without_an_email(
    store: SqlStore, raw: AsyncEngine
) -> None:
    job, _ = await sent_job(store, 1)
    at = utcnow()
    stray = [ses("Delivery", "not-ours", at), ses("Bounce", "x", at, 999_999, job.id, **TRANSIENT)]
    assert await store.record_events(stray) == [UNMATCHED, UNMATCHED]
    assert await store.record_events(stray) == [DUPLICATE, DUPLICATE]
    rows = await stored_events(raw)
    assert [(r["email_id"], r["job_id"]) for r in rows] == [(None, None), (None, job.id)]
    assert rows[1]["detail"] == TRANSIENT


async def test_events_without_tags_match_by_message_id(store: SqlStore, raw: AsyncEngine) -> None:
    job, (email_id,) = await sent_job(store, 1)
    other, _ = await sent_job(store, 1)
    at = utcnow()
    # A foreign sender's tag (an id of another job's email) falls back to the message id.
    events = [
        ses("Delivery", f"ses-{email_id}", at),
        ses("Open", f"ses-{email_id}", at, email_id=email_id, job_id=other.id + 1),
    ]
    assert await store.record_events(events) == [RECORDED, RECORDED]
    rows = await stored_events(raw)
    assert [(r["email_id"], r["job_id"]) for r in rows] == [(email_id, job.id)] * 2
    assert (await email_row(raw, email_id))["delivery_status"] == "delivered"


async def test_send_events_resolve_unknown_emails_and_finish_their_job(
    store: SqlStore, raw: AsyncEngine
) -> None:
    job, ids = await processing_job(store, 3)
    await queue_all(store, job.id)
    for email_id in ids:
        await store.claim(email_id, 60)
    await store.mark_sent(ids[0], f"ses-{ids[0]}", utcnow())
    assert await store.expire_leases(utcnow() + timedelta(minutes=5)) == 2  # a kill -9
    assert [j.status for j in await store.settle_jobs(utcnow())] == [JobStatus.FAILED]

    at = utcnow()
    events = [
        ses("Send", "ses-late-1", at, ids[1], job.id),
        ses("Delivery", "ses-late-2", at + timedelta(seconds=1), ids[2], job.id),
    ]
    assert await store.record_events(events) == [RECORDED, RECORDED]
    resolved = [await email_row(raw, i) for i in ids[1:]]
    assert [(r["status"], r["provider_message_id"]) for r in resolved] == [
        ("sent", "ses-late-1"),
        ("sent", "ses-late-2"),
    ]
    assert [r["sent_at"] for r in resolved] == [at, at + timedelta(seconds=1)]
    assert resolved[1]["delivery_status"] == "delivered"
    (finished,) = await store.settle_jobs(utcnow())
    assert (finished.status, finished.sent_count, finished.failed_count) == (
        JobStatus.COMPLETED,
        3,
        0,
    )


# --- suppression -------------------------------------------------------------------------


async def test_hard_bounces_and_complaints_suppress_and_never_shorten_an_entry(
    store: SqlStore,
) -> None:
    _, (bounced, complained, delayed) = await sent_job(store, 3)
    soon = utcnow() + timedelta(days=1)
    manual = Suppression("customer0@example.com", SuppressionReason.MANUAL, expires_at=soon)
    assert await store.add_suppressions([manual]) == 1
    at = utcnow()
    await store.record_events(
        [
            ses("Bounce", f"ses-{bounced}", at, bounced, recipients=("Customer0@Example.com",),
                **PERMANENT),
            ses("Complaint", f"ses-{complained}", at, recipients=("customer1@example.com",)),
            ses("Bounce", f"ses-{delayed}", at, recipients=("customer2@example.com",),
                **TRANSIENT),
        ]
    )  # fmt: skip
    listed = {entry.address: entry for entry in await store.suppressions(10)}
    assert {a: (e.reason, e.expires_at) for a, e in listed.items()} == {
        "customer0@example.com": (SuppressionReason.HARD_BOUNCE, None),  # lengthened
        "customer1@example.com": (SuppressionReason.COMPLAINT, None),
    }
    again = Suppression("CUSTOMER1@example.com ", SuppressionReason.MANUAL, expires_at=soon)
    assert await store.add_suppressions([again]) == 0  # forever stays forever
    assert [(e.address, e.reason, e.expires_at) for e in await store.suppressions(10)] == [
        ("customer1@example.com", SuppressionReason.COMPLAINT, None),  # the newest first
        ("customer0@example.com", SuppressionReason.HARD_BOUNCE, None),
    ]


async def test_the_suppression_list_is_paged_newest_first_and_removable(
    store: SqlStore,
) -> None:
    start = utcnow() - timedelta(hours=1)
    entries = [
        Suppression(f"c{i}@example.com", SuppressionReason.MANUAL, start + timedelta(minutes=i))
        for i in range(5)
    ]
    assert await store.add_suppressions(entries + entries[:1]) == 5
    page = await store.suppressions(limit=2, offset=1)
    assert [e.address for e in page] == ["c3@example.com", "c2@example.com"]
    assert page[0].created_at == start + timedelta(minutes=3)
    assert await store.remove_suppressions(["C0@example.com", "c1@example.com", "x@y.z"]) == 2
    assert len(await store.suppressions(100)) == 3


async def test_a_suppressed_address_is_suppressed_at_its_claim_not_sent(
    store: SqlStore, raw: AsyncEngine
) -> None:
    addresses = [
        "Jane.Doe@Example.COM",  # case differs from the entry
        "jäne.doe@example.com",  # a different mailbox (not a collation's equal)
        "ÉLODIE@example.com",  # lower-cased in Python
        "ops@bücher.example",  # an international domain, listed in its ASCII form
        "expired@example.com",
        "fine@example.com",
    ]
    job = await store.create_job("statements", "statement", "bank@example.com")
    await store.add_emails(job.id, [NewEmail(a) for a in addresses])
    await store.set_job_status(job.id, JobStatus.PROCESSING)
    past = utcnow() - timedelta(seconds=1)
    await store.add_suppressions(
        [
            Suppression("jane.doe@example.com", SuppressionReason.HARD_BOUNCE),
            Suppression("élodie@example.com", SuppressionReason.UNSUBSCRIBE),
            Suppression("ops@xn--bcher-kva.example", SuppressionReason.COMPLAINT),
            Suppression("expired@example.com", SuppressionReason.MANUAL, expires_at=past),
        ]
    )
    ids = await queue_all(store, job.id)

    outcomes = [r.outcome for r in await asyncio.gather(*(store.claim(i, 60) for i in ids))]
    suppressed, claimed = ClaimOutcome.SUPPRESSED, ClaimOutcome.CLAIMED
    assert outcomes == [suppressed, claimed, suppressed, suppressed, claimed, claimed]
    assert (await store.claim(ids[0], 60)).outcome is suppressed  # its message again
    row = await email_row(raw, ids[0])
    assert (row["status"], row["attempts"], row["lease_until"]) == ("suppressed", 0, None)
    assert "@" not in row["last_error"]

    for email_id in (ids[1], ids[4], ids[5]):
        await store.mark_sent(email_id, f"ses-{email_id}", utcnow())
    (finished,) = await store.settle_jobs(utcnow())
    assert (finished.status, finished.sent_count, finished.failed_count) == (
        JobStatus.COMPLETED,
        3,
        0,
    )


async def test_a_claim_reads_the_suppression_list_without_locking_it(mariadb_url: str) -> None:
    """An operator removing an entry (or the tracker adding one) must not wait for claims."""
    await upgrade_schema(mariadb_url)
    store = await SqlStore.connect(mariadb_url, pool_size=1)
    engine = create_engine(mariadb_url, pool_size=2)
    try:
        job, ids = await processing_job(store, 1)
        await queue_all(store, job.id)
        entry = Suppression("customer0@example.com", SuppressionReason.MANUAL)
        await store.add_suppressions([entry])
        async with engine.begin() as claimer, engine.begin() as operator:
            params = {"b_email_ids": ids, "b_now": utcnow()}
            locked = (await claimer.execute(LOCK_QUEUED, params)).mappings().all()
            assert [row[SUPPRESSED] for row in locked] == [True]
            await operator.execute(sa.text("SET SESSION innodb_lock_wait_timeout = 1"))
            await operator.execute(sa.delete(suppression_table))  # a lock wait timeout if locked
    finally:
        await engine.dispose()
        await store.close()


async def test_a_paused_jobs_suppressed_email_waits_with_the_job(store: SqlStore) -> None:
    job, ids = await processing_job(store, 1)
    await queue_all(store, job.id)
    await store.add_suppressions([Suppression("customer0@example.com", SuppressionReason.MANUAL)])
    assert await store.pause_job(job.id, "operator")
    assert (await store.claim(ids[0], 60)).outcome is ClaimOutcome.JOB_PAUSED


# --- the reputation brake and the gauge ---------------------------------------------------


async def test_brake_counts_sends_hard_bounces_and_complaints_per_job(store: SqlStore) -> None:
    job, ids = await sent_job(store, 6)
    quiet, _ = await sent_job(store, 2)
    at = utcnow()
    events = [
        ses("Bounce", f"ses-{ids[0]}", at, **PERMANENT),
        ses("Bounce", f"ses-{ids[0]}", at + timedelta(seconds=1), **PERMANENT),  # same email
        ses("Bounce", f"ses-{ids[1]}", at, **TRANSIENT),  # not the account's bounce rate
        ses("Bounce", f"ses-{ids[2]}", at, **PERMANENT),
        ses("Complaint", f"ses-{ids[3]}", at),
        ses("Delivery", f"ses-{ids[4]}", at),
    ]
    await store.record_events(events)
    await store.record_events(events)  # duplicates count nothing
    counts = await store.brake_counts([job.id, quiet.id, job.id + quiet.id + 100])
    assert counts == {job.id: BrakeCounts(6, 2, 1), quiet.id: BrakeCounts(2, 0, 0)}


async def test_pause_job_names_its_reason_and_resume_clears_it(store: SqlStore) -> None:
    job, _ = await processing_job(store, 1)
    reason = "reputation brake: bounce rate 15.0% (30 of 200 sent) reached 5.0%"
    assert await store.pause_job(job.id, reason)
    paused = await store.job(job.id)
    assert (paused.status, paused.paused_reason) == (JobStatus.PAUSED, reason)
    assert not await store.pause_job(job.id, "again")  # only from processing
    assert (await store.job(job.id)).paused_reason == reason
    resumed = await store.set_job_status(job.id, JobStatus.PROCESSING, [JobStatus.PAUSED])
    assert (resumed.status, resumed.paused_reason) == (JobStatus.PROCESSING, None)
    assert not await store.pause_job(job.id + 100, reason)


async def test_the_delivery_gauge_counts_jobs_in_flight_and_lately_finished(
    store: SqlStore, raw: AsyncEngine
) -> None:
    old, (old_email,) = await sent_job(store, 1)
    recent, (recent_email,) = await sent_job(store, 1)
    running, (running_email, _) = await sent_job(store, 2)
    at = utcnow()
    await store.record_events(
        [
            ses("Delivery", f"ses-{old_email}", at),
            ses("Bounce", f"ses-{recent_email}", at, **PERMANENT),
            ses("Delivery", f"ses-{running_email}", at),
        ]
    )

    async def finish(conn: AsyncConnection, job_id: int, finished_at: datetime) -> None:
        await conn.execute(
            sa.update(job_table)
            .where(job_table.c.id == job_id)
            .values(status=JobStatus.COMPLETED, finished_at=finished_at)
        )

    async with raw.begin() as conn:
        await finish(conn, old.id, at - timedelta(days=2))
        await finish(conn, recent.id, at - timedelta(hours=2))
    counts = await store.count_by_delivery_status()
    assert counts == {
        DeliveryStatus.DELAYED: 0,
        DeliveryStatus.DELIVERED: 1,
        DeliveryStatus.REJECTED: 0,
        DeliveryStatus.BOUNCED: 1,
        DeliveryStatus.COMPLAINED: 0,
    }
    async with raw.connect() as conn:  # the old job's delivery is there, just not counted
        query = sa.select(email_table.c.delivery_status).where(email_table.c.id == old_email)
        assert await conn.scalar(query) == "delivered"
    assert running.status is JobStatus.PROCESSING


async def test_an_unsubscribe_suppresses_its_emails_address(store: SqlStore) -> None:
    _, (email_id,) = await processing_job(store, 1)
    assert await store.unsubscribe_email(email_id)
    assert await store.unsubscribe_email(email_id)  # a second click: still suppressed
    (entry,) = await store.suppressions(10)
    assert (entry.address, entry.reason, entry.expires_at) == (
        "customer0@example.com",
        SuppressionReason.UNSUBSCRIBE,
        None,
    )
    assert entry.note == f"unsubscribe link of email {email_id}"  # no address in it
    assert not await store.unsubscribe_email(email_id + 100)  # purged, or never there
