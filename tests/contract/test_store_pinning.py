"""The ``ports.Store`` contract for template pinning and send-by deadlines, on MariaDB and
SQLite (the same fixtures as ``test_store``).

Pinning: a job is pinned to the highest version of its template (any locale) when the
publisher first picks it up; every email renders with its locale's newest version at or
below the pin and records the version with its outcome. Deadlines: the emails of a job
whose ``send_by`` has passed expire (at the claim, or in bulk by the settler), never as
an attempt, and the job finishes.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from delivery_server.adapters.store_sql import SqlStore, deadlines
from delivery_server.adapters.store_sql.schema import job as job_table
from delivery_server.models import ClaimOutcome, EmailStatus, JobStatus, Template, utcnow
from tests.contract.test_store import (
    email_row,
    processing_job,
    publish_into,
    queue_all,
)

pytestmark = pytest.mark.timeout(60)


async def push(store: SqlStore, locale: str, text: str) -> Template:
    return await store.add_template(Template("statement", locale, 0, text, text))


# --- pinning -----------------------------------------------------------------------------


async def test_a_job_is_pinned_when_it_starts_and_a_later_push_changes_nothing(
    store: SqlStore,
) -> None:
    await push(store, "en", "en 1")
    german = await push(store, "de", "de 2")
    english = await push(store, "en", "en 3")
    job, _ = await processing_job(store, 1)
    assert job.template_version is None  # not started yet

    (started,) = await store.due_jobs(utcnow())
    assert started.template_version == 3
    assert (await store.job(job.id)).template_version == 3

    await push(store, "en", "en 4")
    await push(store, "de", "de 5")
    await push(store, "fr", "fr 6")  # a locale the job's French emails fell back from
    again = await store.due_jobs(utcnow())
    assert [j.template_version for j in again] == [3]
    assert started.started_at == again[0].started_at
    # What the job's emails render with, per locale:
    assert await store.template("statement", "en", as_of=3) == english
    assert await store.template("statement", "de", as_of=3) == german
    assert await store.template("statement", "fr", as_of=3) is None  # falls back to en
    latest = await store.template("statement", "en")
    assert latest is not None
    assert latest.version == 4


async def test_a_job_is_pinned_once_its_template_exists_and_an_upstream_pin_is_kept(
    store: SqlStore, raw: AsyncEngine
) -> None:
    early, _ = await processing_job(store, 1)
    upstream, _ = await processing_job(store, 1)
    async with raw.begin() as conn:
        await conn.execute(
            sa.update(job_table).where(job_table.c.id == upstream.id).values(template_version=1)
        )
    jobs = {j.id: j for j in await store.due_jobs(utcnow())}
    assert jobs[early.id].template_version is None  # nothing to pin to yet
    assert jobs[early.id].started_at is not None

    await push(store, "en", "v1")
    await push(store, "en", "v2")
    jobs = {j.id: j for j in await store.due_jobs(utcnow())}
    assert jobs[early.id].template_version == 2
    assert jobs[upstream.id].template_version == 1


async def test_each_send_records_the_version_that_rendered_it(
    store: SqlStore, raw: AsyncEngine
) -> None:
    job, ids = await processing_job(store, 5)
    await queue_all(store, job.id)
    for email_id in ids:
        assert (await store.claim(email_id, 60)).outcome is ClaimOutcome.CLAIMED
    now = utcnow()
    # One batch of one version, then one batch of several (and one without: SES's Send
    # event path, which keeps what is there).
    await store.mark_sent(ids[0], "ses-0", now, 7)
    await asyncio.gather(
        store.mark_sent(ids[1], "ses-1", now, 7),
        store.mark_sent(ids[2], "ses-2", now, 8),
        store.mark_sent(ids[3], "ses-3", now, None),
    )
    await store.mark_final(ids[4], EmailStatus.FAILED, "550 rejected", 8)
    rows = [await email_row(raw, i) for i in ids]
    assert [row["template_version"] for row in rows] == [7, 7, 8, None, 8]
    assert [row["status"] for row in rows] == ["sent"] * 4 + ["failed"]
    assert rows[2]["provider_message_id"] == "ses-2"


# --- send-by deadlines -------------------------------------------------------------------


async def test_create_job_keeps_its_send_by(store: SqlStore) -> None:
    send_by = (utcnow() + timedelta(hours=2)).replace(microsecond=0)
    created = await store.create_job("s", "statement", "bank@example.com", send_by=send_by)
    assert created.send_by == send_by
    assert (await store.job(created.id)).send_by == send_by
    assert (await store.jobs())[0].send_by == send_by


async def test_a_claim_past_the_deadline_expires_the_email_without_an_attempt(
    store: SqlStore, raw: AsyncEngine
) -> None:
    job, ids = await processing_job(store, 2, send_by=utcnow() + timedelta(hours=1))
    await queue_all(store, job.id)
    assert (await store.claim(ids[0], 60)).outcome is ClaimOutcome.CLAIMED
    async with raw.begin() as conn:  # the deadline comes
        await conn.execute(
            sa.update(job_table)
            .where(job_table.c.id == job.id)
            .values(send_by=utcnow() - timedelta(seconds=1))
        )
    assert (await store.claim(ids[1], 60)).outcome is ClaimOutcome.EXPIRED
    assert (await store.claim(ids[1], 60)).outcome is ClaimOutcome.EXPIRED  # a redelivery
    row = await email_row(raw, ids[1])
    assert (row["status"], row["attempts"]) == ("expired", 0)

    # The one in hand, found too late by its consumer before the send.
    await store.mark_final(ids[0], EmailStatus.EXPIRED, None)
    row = await email_row(raw, ids[0])
    assert (row["status"], row["attempts"], row["lease_until"]) == ("expired", 0, None)


async def test_the_settler_expires_what_is_left_and_the_job_completes(
    store: SqlStore, raw: AsyncEngine
) -> None:
    send_by = utcnow() + timedelta(minutes=5)
    job, ids = await processing_job(store, 5, send_by=send_by)
    sink: list[int] = []
    await store.publish_pending(job.id, 2, publish_into(sink))  # two queued, three pending
    assert (await store.claim(sink[0], 60)).outcome is ClaimOutcome.CLAIMED
    await store.mark_sent(sink[0], "ses-0", utcnow(), 1)
    assert await store.settle_jobs(send_by - timedelta(seconds=1)) == []  # not yet

    (finished,) = await store.settle_jobs(send_by)
    assert finished.status is JobStatus.COMPLETED  # an expired email is no failure
    assert (finished.sent_count, finished.failed_count, finished.total_count) == (1, 0, 5)
    summary = await store.job_summary(job.id)
    assert summary.counts[EmailStatus.EXPIRED] == 4
    assert summary.counts[EmailStatus.SENT] == 1
    assert [(await email_row(raw, i))["attempts"] for i in ids if i != sink[0]] == [0] * 4


async def test_a_job_past_its_deadline_with_a_failure_fails_and_publishes_nothing(
    store: SqlStore,
) -> None:
    job, _ = await processing_job(store, 3, send_by=utcnow() + timedelta(hours=1))
    sink: list[int] = []
    await store.publish_pending(job.id, 1, publish_into(sink))
    await store.claim(sink[0], 60)
    await store.mark_final(sink[0], EmailStatus.FAILED, "550 no such user")
    past, _ = await processing_job(store, 2, send_by=utcnow() - timedelta(seconds=1))
    assert await queue_all(store, past.id) == []  # past its deadline: never queued

    finished = {j.id: j for j in await store.settle_jobs(utcnow() + timedelta(hours=1))}
    assert finished[job.id].status is JobStatus.FAILED
    assert finished[past.id].status is JobStatus.COMPLETED
    assert (await store.job_summary(past.id)).counts[EmailStatus.EXPIRED] == 2


async def test_a_paused_job_past_its_deadline_keeps_its_emails_until_resumed(
    store: SqlStore,
) -> None:
    job, _ = await processing_job(store, 2, send_by=utcnow() - timedelta(seconds=1))
    await store.set_job_status(job.id, JobStatus.PAUSED)
    assert await store.settle_jobs(utcnow()) == []
    assert (await store.job_summary(job.id)).counts[EmailStatus.PENDING] == 2

    await store.set_job_status(job.id, JobStatus.PROCESSING)
    (finished,) = await store.settle_jobs(utcnow())
    assert finished.status is JobStatus.COMPLETED
    assert (await store.job_summary(job.id)).counts[EmailStatus.EXPIRED] == 2


async def test_bulk_expiry_goes_in_batches_and_a_bounded_amount_per_pass(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deadlines, "EXPIRE_BATCH", 2)
    monkeypatch.setattr(deadlines, "EXPIRE_PER_PASS", 3)
    job, ids = await processing_job(store, 5, send_by=utcnow() - timedelta(seconds=1))
    assert await deadlines.expire_overdue(store._db, utcnow()) == 3
    counts = (await store.job_summary(job.id)).counts
    assert (counts[EmailStatus.EXPIRED], counts[EmailStatus.PENDING]) == (3, 2)
    (finished,) = await store.settle_jobs(utcnow())  # the other two expire: it is done
    assert (finished.id, finished.total_count) == (job.id, len(ids))
    assert (await store.job_summary(job.id)).counts[EmailStatus.EXPIRED] == 5
