"""The ``ports.Store`` contract: one suite, run against MariaDB and against SQLite.

Every test gets a freshly migrated database through the ``database_url`` fixture
(parametrized over ``STORE_BACKENDS``). Concurrency tests use two ``SqlStore`` instances,
i.e. two connection pools, on the same database, the way two tasks share MySQL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pymysql  # type: ignore[import-untyped]
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from delivery_server.adapters.store_sql import SqlStore, upgrade_schema
from delivery_server.adapters.store_sql.emails import LOCK_QUEUED
from delivery_server.adapters.store_sql.engine import create_engine
from delivery_server.adapters.store_sql.migrate import VERSION_TABLE, alembic_config
from delivery_server.adapters.store_sql.rows import JOB_JSON, job_from_json
from delivery_server.adapters.store_sql.schema import email as email_table
from delivery_server.adapters.store_sql.schema import job as job_table
from delivery_server.adapters.store_sql.schema import metadata
from delivery_server.errors import ConfigError, NotFoundError, PermanentError, RetryableError
from delivery_server.models import (
    AttachmentRef,
    ClaimOutcome,
    ClaimResult,
    EmailStatus,
    Job,
    JobStatus,
    NewEmail,
    QueueMessage,
    Template,
    utcnow,
)
from delivery_server.ports import LiveInstances
from tests.conftest import MARIADB_HOST, MARIADB_PORT, free_port
from tests.contract.conftest import STORE_BACKENDS
from tests.support.migrations import head_revision

pytestmark = pytest.mark.timeout(60)

# Fixture names from tests/conftest.py, one per database the store supports.

DESIGN_COLUMNS = {
    "delivery_template": {
        "id", "name", "locale", "version", "subject", "text_body", "html_body", "created_at",
    },
    "delivery_job": {
        "id", "name", "status", "template_name", "from_address", "reply_to", "scheduled_at",
        "created_at", "started_at", "finished_at", "total_count", "sent_count", "failed_count",
    },
    "delivery_email": {
        "id", "job_id", "to_address", "locale", "variables", "attachments", "status",
        "attempts", "last_error", "provider_message_id", "created_at", "updated_at", "sent_at",
        "lease_until",
    },
}  # fmt: skip


async def processing_job(store: SqlStore, count: int, **job: Any) -> tuple[Job, list[int]]:
    """A processing job with ``count`` pending emails; returns it and the email ids."""
    created = await store.create_job("statements", "statement", "bank@example.com", **job)
    await store.add_emails(
        created.id, (NewEmail(f"customer{i}@example.com", {"n": i}) for i in range(count))
    )
    started = await store.set_job_status(created.id, JobStatus.PROCESSING)
    return started, await email_ids(store, created.id)


async def email_ids(store: SqlStore, job_id: int) -> list[int]:
    async def read(conn: AsyncConnection) -> list[int]:
        result = await conn.execute(
            sa.select(email_table.c.id)
            .where(email_table.c.job_id == job_id)
            .order_by(email_table.c.id)
        )
        return list(result.scalars())

    return await store._db.run(read, write=False)


async def email_row(raw: AsyncEngine, email_id: int) -> sa.RowMapping:
    async with raw.connect() as conn:
        query = sa.select(email_table).where(email_table.c.id == email_id)
        row: sa.RowMapping = (await conn.execute(query)).mappings().one()
        return row


async def queue_all(store: SqlStore, job_id: int) -> list[int]:
    sink: list[int] = []
    await store.publish_pending(job_id, 10_000, publish_into(sink))
    return sink


def publish_into(sink: list[int], refuse: Sequence[int] = ()) -> Any:
    async def publish(messages: Sequence[QueueMessage]) -> set[int]:
        await asyncio.sleep(0)  # let other publishers run while this one holds its rows
        sink.extend(m.email_id for m in messages if m.email_id not in refuse)
        return {m.email_id for m in messages if m.email_id in refuse}

    return publish


async def claimed_email(store: SqlStore, job_id: int) -> int:
    """Queue the job and claim its first email; return that email's id."""
    first = (await queue_all(store, job_id))[0]
    assert (await store.claim(first, 60)).outcome is ClaimOutcome.CLAIMED
    return first


# --- schema and migrations ---------------------------------------------------------------


async def test_upgrade_is_idempotent_and_creates_the_design_columns(
    database_url: str, raw: AsyncEngine
) -> None:
    await upgrade_schema(database_url)  # the fixture ran it once already

    def inspect(conn: sa.Connection) -> dict[str, set[str]]:
        inspector = sa.inspect(conn)
        return {t: {c["name"] for c in inspector.get_columns(t)} for t in DESIGN_COLUMNS}

    async with raw.connect() as conn:
        columns = await conn.run_sync(inspect)
        version_query: sa.Select[Any] = sa.select(sa.column("version_num")).select_from(
            sa.table(VERSION_TABLE)
        )
        versions = (await conn.execute(version_query)).all()
    for table, expected in DESIGN_COLUMNS.items():
        assert expected <= columns[table], table
    assert [tuple(v) for v in versions] == [(head_revision(),)]


@pytest.mark.parametrize("backend", STORE_BACKENDS)
async def test_a_database_at_the_first_revision_is_upgraded(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(backend)
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0001"))
        await upgrade_schema(url)
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    assert {"delivery_email", "delivery_instance", VERSION_TABLE} <= tables


async def test_migrations_build_exactly_the_schema_module(raw: AsyncEngine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    def differences(conn: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return list(compare_metadata(context, metadata))

    async with raw.connect() as conn:
        assert await conn.run_sync(differences) == []


def test_bad_urls_are_configuration_errors() -> None:
    bad_port = "mysql://user:s3cret@db:port/x"
    for url in ("postgresql://db/x", "sqlite://", "sqlite:///:memory:", "not a url", bad_port):
        with pytest.raises(ConfigError, match="DELIVERY_DATABASE_URL") as raised:
            create_engine(url)
        assert "s3cret" not in str(raised.value)


# --- templates ---------------------------------------------------------------------------


async def test_templates_are_versioned_per_name_across_locales(store: SqlStore) -> None:
    first = await store.add_template(Template("statement", "en", 0, "S1", "T1"))
    second = await store.add_template(Template("statement", "en", 0, "S2", "T2", "<p>2</p>"))
    german = await store.add_template(Template("statement", "de", 0, "Auszug", "Text 🎉"))
    # One count per name: a push in any locale comes after every version a running job
    # may be pinned to (tests/contract/test_store_pinning.py).
    assert (first.version, second.version, german.version) == (1, 2, 3)
    assert first.id is not None
    assert first.created_at is not None

    latest = await store.template("statement", "en")
    assert latest == second
    assert await store.template("statement", "fr") is None
    assert await store.template("nothing", "en") is None
    assert await store.templates() == [german, second]

    with pytest.raises(PermanentError, match="already exists"):
        await store.add_template(Template("statement", "en", 2, "again", "again"))
    assert (await store.add_template(Template("statement", "en", 7, "S7", "T7"))).version == 7
    assert (await store.add_template(Template("letter", "de", 0, "L", "L"))).version == 1


async def test_concurrent_template_pushes_get_distinct_versions(
    store: SqlStore, other_store: SqlStore
) -> None:
    pushes = [
        s.add_template(Template("letter", "en", 0, f"S{i}", "T"))
        for i, s in enumerate([store, other_store] * 3)
    ]
    versions = sorted(t.version for t in await asyncio.gather(*pushes))
    assert versions == [1, 2, 3, 4, 5, 6]


# --- jobs and emails (admin) -------------------------------------------------------------


async def test_jobs_are_created_in_draft_and_listed_newest_first(store: SqlStore) -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, 678901)
    first = await store.create_job("a", "t", "from@example.com", "reply@example.com", when)
    second = await store.create_job("b", "t", "from@example.com")
    assert first.status is JobStatus.DRAFT
    assert first.reply_to == "reply@example.com"
    assert await store.job(first.id) == first
    assert (await store.job(first.id)).scheduled_at == when  # microseconds survive
    assert [j.id for j in await store.jobs()] == [second.id, first.id]
    assert [j.id for j in await store.jobs(limit=1)] == [second.id]
    with pytest.raises(NotFoundError):
        await store.job(second.id + 100)


async def test_add_emails_counts_them_into_the_job(store: SqlStore) -> None:
    job = await store.create_job("a", "t", "from@example.com")
    batch = (NewEmail(f"c{i}@example.com", {"i": i}) for i in range(2500))  # > one insert
    assert await store.add_emails(job.id, batch) == 2500
    assert await store.add_emails(job.id, []) == 0
    assert await store.add_emails(job.id, [NewEmail("last@example.com")]) == 1
    assert (await store.job(job.id)).total_count == 2501
    assert (await store.job_summary(job.id)).counts[EmailStatus.PENDING] == 2501
    with pytest.raises(NotFoundError):
        await store.add_emails(job.id + 100, [NewEmail("x@example.com")])


async def test_a_claim_returns_the_email_as_registered(store: SqlStore) -> None:
    scheduled = datetime(2020, 1, 2, 3, 4, 5, 678901)
    job = await store.create_job('a "Zoë"', "t", "from@example.com", "reply@example.com", scheduled)
    pdf = AttachmentRef("s3://bucket/key.pdf", "statement.pdf", "application/pdf")
    variables = {"name": "Zoë 🏦", "amount": 12.5, "nested": {"a": None}}
    await store.add_emails(job.id, [NewEmail("zoë@example.com", variables, "de", (pdf,))])
    await store.set_job_status(job.id, JobStatus.PROCESSING)
    (email_id,) = await queue_all(store, job.id)

    result = await store.claim(email_id, 60)
    assert result.outcome is ClaimOutcome.CLAIMED
    assert result.claimed is not None
    email, claimed_job = result.claimed.email, result.claimed.job
    assert (email.to_address, email.variables, email.locale) == ("zoë@example.com", variables, "de")
    assert email.attachments == (pdf,)
    assert (email.status, email.attempts, email.job_id) == (EmailStatus.SENDING, 1, job.id)
    assert claimed_job == await store.job(job.id)  # every column, times to the microsecond
    assert claimed_job.reply_to == "reply@example.com"
    assert claimed_job.status is JobStatus.PROCESSING
    assert (claimed_job.name, claimed_job.scheduled_at) == ('a "Zoë"', scheduled)


async def test_job_status_changes_only_from_the_expected_statuses(store: SqlStore) -> None:
    job = await store.create_job("a", "t", "from@example.com")
    paused = await store.set_job_status(job.id, JobStatus.PAUSED, [JobStatus.DRAFT])
    assert paused.status is JobStatus.PAUSED
    assert paused.finished_at is None
    with pytest.raises(PermanentError, match="paused"):
        await store.set_job_status(job.id, JobStatus.PROCESSING, [JobStatus.DRAFT])
    again = await store.set_job_status(job.id, JobStatus.PAUSED, [JobStatus.PAUSED])
    assert again.status is JobStatus.PAUSED
    done = await store.set_job_status(job.id, JobStatus.COMPLETED)
    assert done.finished_at is not None
    with pytest.raises(NotFoundError):
        await store.set_job_status(job.id + 100, JobStatus.PAUSED)


async def test_cancel_stops_pending_and_queued_emails_only(store: SqlStore) -> None:
    job, ids = await processing_job(store, 4)
    await store.publish_pending(job.id, 2, publish_into([]))  # ids 0, 1 queued
    assert (await store.claim(ids[0], 60)).outcome is ClaimOutcome.CLAIMED

    assert await store.cancel_job(job.id) == 3
    summary = await store.job_summary(job.id)
    assert summary.job.status is JobStatus.CANCELLED
    assert summary.job.finished_at is not None
    assert summary.counts[EmailStatus.CANCELLED] == 3
    assert summary.counts[EmailStatus.SENDING] == 1  # in flight: its consumer settles it
    assert await store.cancel_job(job.id) == 0  # again: nothing left to cancel

    done, _ = await processing_job(store, 0)
    await store.set_job_status(done.id, JobStatus.COMPLETED)
    with pytest.raises(PermanentError, match="completed"):
        await store.cancel_job(done.id)
    with pytest.raises(NotFoundError):
        await store.cancel_job(job.id + 100)


async def test_job_summary_counts_and_shows_the_newest_errors_without_addresses(
    store: SqlStore,
) -> None:
    job, ids = await processing_job(store, 13)
    await queue_all(store, job.id)
    for email_id in ids[:12]:
        await store.claim(email_id, 60)
        await store.mark_final(email_id, EmailStatus.FAILED, f"550 rejected #{email_id}")
    summary = await store.job_summary(job.id)

    assert summary.counts[EmailStatus.FAILED] == 12
    assert summary.counts[EmailStatus.QUEUED] == 1
    assert sum(summary.counts.values()) == 13
    assert set(summary.counts) == set(EmailStatus)
    assert summary.last_errors == [(i, f"550 rejected #{i}") for i in reversed(ids[2:12])]
    with pytest.raises(NotFoundError):
        await store.job_summary(job.id + 100)


async def test_count_by_status_covers_every_status(store: SqlStore) -> None:
    job, _ = await processing_job(store, 3)
    await store.create_job("draft", "t", "from@example.com")
    await store.publish_pending(job.id, 1, publish_into([]))
    jobs, emails = await store.count_by_status()
    assert set(jobs) == set(JobStatus)
    assert set(emails) == set(EmailStatus)
    assert jobs[JobStatus.PROCESSING] == 1
    assert jobs[JobStatus.DRAFT] == 1
    assert emails[EmailStatus.PENDING] == 2
    assert emails[EmailStatus.QUEUED] == 1
    assert emails[EmailStatus.SENT] == 0


# --- publishing --------------------------------------------------------------------------


async def test_due_jobs_are_processing_and_not_scheduled_later(store: SqlStore) -> None:
    now = utcnow()
    due, _ = await processing_job(store, 1)
    past, _ = await processing_job(store, 1, scheduled_at=now - timedelta(minutes=1))
    await processing_job(store, 1, scheduled_at=now + timedelta(hours=1))
    await store.create_job("draft", "t", "from@example.com")

    picked = await store.due_jobs(now)
    assert [j.id for j in picked] == [due.id, past.id]
    assert all(j.started_at == now for j in picked)
    later = await store.due_jobs(now + timedelta(seconds=5))
    assert [j.started_at for j in later] == [now, now]  # the first pick-up is kept
    assert (await store.job(due.id)).started_at == now


async def test_publish_pending_queues_a_page_in_id_order(store: SqlStore) -> None:
    job, ids = await processing_job(store, 5)
    sink: list[int] = []
    assert await store.publish_pending(job.id, 3, publish_into(sink)) == 3
    assert sink == ids[:3]
    assert await store.publish_pending(job.id, 3, publish_into(sink)) == 2
    assert await store.publish_pending(job.id, 3, publish_into(sink)) == 0
    assert sink == ids
    assert (await store.job_summary(job.id)).counts[EmailStatus.QUEUED] == 5


async def test_unpublished_emails_go_back_to_pending(store: SqlStore) -> None:
    job, ids = await processing_job(store, 4)
    sink: list[int] = []
    assert await store.publish_pending(job.id, 10, publish_into(sink, refuse=ids[1:3])) == 2
    counts = (await store.job_summary(job.id)).counts
    assert counts[EmailStatus.QUEUED] == 2
    assert counts[EmailStatus.PENDING] == 2
    assert await store.publish_pending(job.id, 10, publish_into(sink)) == 2
    assert sorted(sink) == ids


async def test_a_failing_publish_rolls_everything_back(store: SqlStore) -> None:
    job, _ = await processing_job(store, 3)

    async def broken(messages: Sequence[QueueMessage]) -> set[int]:
        raise RetryableError("queue down")

    with pytest.raises(RetryableError, match="queue down"):
        await store.publish_pending(job.id, 10, broken)
    assert (await store.job_summary(job.id)).counts[EmailStatus.PENDING] == 3


async def test_only_processing_jobs_are_published(store: SqlStore) -> None:
    job, _ = await processing_job(store, 2)
    await store.set_job_status(job.id, JobStatus.PAUSED)
    assert await store.publish_pending(job.id, 10, publish_into([])) == 0


async def test_two_publishers_never_hand_out_the_same_email(
    store: SqlStore, other_store: SqlStore
) -> None:
    job, ids = await processing_job(store, 600)
    sinks: list[list[int]] = [[], [], [], []]

    async def publisher(s: SqlStore, sink: list[int]) -> None:
        while await s.publish_pending(job.id, 25, publish_into(sink)):
            pass

    pools = [store, other_store] * 2
    await asyncio.gather(*(publisher(s, k) for s, k in zip(pools, sinks, strict=True)))
    published = [i for sink in sinks for i in sink]
    assert sorted(published) == ids  # every email exactly once
    assert sum(1 for sink in sinks if sink) >= 2  # both pools really took part


async def test_a_claim_during_an_open_publish_waits_for_its_commit(mariadb_url: str) -> None:
    """A consumer may receive a message before the publisher commits: on MariaDB the
    claim must wait for that commit, never drop the message as "not queued". (On SQLite
    the publisher holds the only write lock, so the claim cannot even start.)"""
    await upgrade_schema(mariadb_url)
    publisher, consumer = [await SqlStore.connect(mariadb_url, pool_size=2) for _ in range(2)]
    try:
        job, _ = await processing_job(publisher, 1)
        claims: list[asyncio.Task[ClaimResult]] = []

        async def publish(messages: Sequence[QueueMessage]) -> set[int]:
            claims.append(asyncio.create_task(consumer.claim(messages[0].email_id, 60)))
            await asyncio.to_thread(wait_for_lock_wait, mariadb_url.rsplit("/", 1)[1])
            return set()

        assert await publisher.publish_pending(job.id, 10, publish) == 1
        assert (await claims[0]).outcome is ClaimOutcome.CLAIMED
    finally:
        await publisher.close()
        await consumer.close()


async def test_a_claim_locks_its_emails_but_not_their_job(mariadb_url: str) -> None:
    """The claim reads each email's job with the lock on the email; the job row must stay
    unlocked, or every claim of a job would queue behind the others and the settler."""
    await upgrade_schema(mariadb_url)
    store = await SqlStore.connect(mariadb_url, pool_size=1)
    engine = create_engine(mariadb_url, pool_size=2)
    try:
        job, ids = await processing_job(store, 2)
        await queue_all(store, job.id)
        async with engine.begin() as claimer, engine.begin() as settler:
            params = {"b_email_ids": ids, "b_now": utcnow()}
            locked = (await claimer.execute(LOCK_QUEUED, params)).mappings().all()
            assert [(row["id"], job_from_json(row[JOB_JSON]).name) for row in locked] == [
                (i, "statements") for i in ids
            ]
            await settler.execute(sa.text("SET SESSION innodb_lock_wait_timeout = 1"))
            rename = sa.update(job_table).where(job_table.c.id == job.id).values(name="x")
            await settler.execute(rename)  # a lock wait timeout if the job were locked
    finally:
        await engine.dispose()
        await store.close()


def wait_for_lock_wait(database: str, timeout: float = 20.0) -> None:
    """Block until a transaction in ``database`` waits for a row lock."""
    query = (
        "SELECT COUNT(*) FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST"
        " p ON p.ID = t.trx_mysql_thread_id WHERE t.trx_state = 'LOCK WAIT' AND p.DB = %s"
    )
    conn = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root", autocommit=True)
    deadline = time.monotonic() + timeout
    try:
        with conn.cursor() as cur:
            while cur.execute(query, (database,)) and cur.fetchone() == (0,):
                if time.monotonic() > deadline:
                    pytest.fail("nothing waited for a row lock")
                time.sleep(0.01)
    finally:
        conn.close()


# --- claiming and settling emails --------------------------------------------------------


async def test_a_claim_takes_a_queued_email_once_with_an_attempt_and_a_lease(
    store: SqlStore, raw: AsyncEngine
) -> None:
    job, ids = await processing_job(store, 2)
    await queue_all(store, job.id)
    before = utcnow()
    first = await store.claim(ids[0], 90)
    assert first.outcome is ClaimOutcome.CLAIMED
    assert first.claimed is not None
    assert first.claimed.email.attempts == 1
    row = await email_row(raw, ids[0])
    assert before + timedelta(seconds=89) < row["lease_until"] < utcnow() + timedelta(seconds=91)

    second = await store.claim(ids[0], 90)
    assert second == ClaimResult(ClaimOutcome.NOT_QUEUED)
    assert (await store.claim(ids[-1] + 100, 90)).outcome is ClaimOutcome.MISSING


async def test_claims_report_why_not(store: SqlStore) -> None:
    job, ids = await processing_job(store, 2)
    assert (await store.claim(ids[0], 60)).outcome is ClaimOutcome.NOT_QUEUED  # still pending
    await queue_all(store, job.id)
    await store.set_job_status(job.id, JobStatus.PAUSED)
    assert (await store.claim(ids[0], 60)).outcome is ClaimOutcome.JOB_PAUSED
    await store.set_job_status(job.id, JobStatus.DRAFT)
    assert (await store.claim(ids[0], 60)).outcome is ClaimOutcome.JOB_INACTIVE
    await store.set_job_status(job.id, JobStatus.PROCESSING)
    assert (await store.claim(ids[0], 60)).outcome is ClaimOutcome.CLAIMED
    await store.cancel_job(job.id)
    assert (await store.claim(ids[1], 60)).outcome is ClaimOutcome.JOB_INACTIVE


async def test_an_email_written_malformed_upstream_fails_at_its_claim(
    store: SqlStore, raw: AsyncEngine
) -> None:
    job, (good,) = await processing_job(store, 1)
    async with raw.begin() as conn:
        await conn.execute(sa.update(email_table).values(attachments=[{"uri": "s3://b/k"}]))
    await queue_all(store, job.id)
    assert (await store.claim(good, 60)).outcome is ClaimOutcome.NOT_QUEUED
    row = await email_row(raw, good)
    assert row["status"] == EmailStatus.FAILED
    assert "filename" in row["last_error"]


async def test_many_concurrent_claims_of_one_email_have_one_winner(
    store: SqlStore, other_store: SqlStore
) -> None:
    job, (email_id,) = await processing_job(store, 1)
    await queue_all(store, job.id)
    results = await asyncio.gather(*(s.claim(email_id, 60) for s in [store, other_store] * 8))
    outcomes = [r.outcome for r in results]
    assert outcomes.count(ClaimOutcome.CLAIMED) == 1
    assert outcomes.count(ClaimOutcome.NOT_QUEUED) == 15


async def test_concurrent_consumers_claim_every_email_exactly_once(
    store: SqlStore, other_store: SqlStore
) -> None:
    job, ids = await processing_job(store, 150)
    await queue_all(store, job.id)
    # Every email is claimed by three consumers at once, in a different order per pool.
    attempts = [s.claim(i, 60) for i in ids for s in (store, other_store, store)]
    results = await asyncio.gather(*attempts)
    winners = sorted(r.claimed.email.id for r in results if r.claimed is not None)
    assert winners == ids


async def test_claims_made_together_each_get_their_own_outcome(
    store: SqlStore, raw: AsyncEngine
) -> None:
    """Concurrent claims are written as one transaction; each caller still learns its
    own outcome, and a repeated id is won by one caller only."""
    job, ids = await processing_job(store, 4)
    paused, (paused_id,) = await processing_job(store, 1)
    await queue_all(store, job.id)
    await queue_all(store, paused.id)
    await store.set_job_status(paused.id, JobStatus.PAUSED)
    _, (pending_id,) = await processing_job(store, 1)  # never published
    requests = [*ids, ids[0], paused_id, pending_id, ids[-1] + 10_000]

    results = await asyncio.gather(*(store.claim(i, 60) for i in requests))

    outcomes = [r.outcome for r in results]
    assert outcomes == [ClaimOutcome.CLAIMED] * 4 + [
        ClaimOutcome.NOT_QUEUED,
        ClaimOutcome.JOB_PAUSED,
        ClaimOutcome.NOT_QUEUED,
        ClaimOutcome.MISSING,
    ]
    assert [r.claimed.email.id for r in results[:4] if r.claimed] == ids
    assert all(r.claimed and r.claimed.email.attempts == 1 for r in results[:4])
    assert (await email_row(raw, paused_id))["status"] == EmailStatus.QUEUED


async def test_sends_recorded_together_keep_their_own_ids_and_times(
    store: SqlStore, raw: AsyncEngine
) -> None:
    job, ids = await processing_job(store, 5)
    await queue_all(store, job.id)
    await asyncio.gather(*(store.claim(i, 60) for i in ids))
    sent_at = [datetime(2031, 1, 1, 0, 0, n, n * 1000) for n in range(len(ids))]

    await asyncio.gather(
        *(store.mark_sent(i, f"ses-{i}", at) for i, at in zip(ids, sent_at, strict=True))
    )

    for email_id, at in zip(ids, sent_at, strict=True):
        row = await email_row(raw, email_id)
        assert (row["status"], row["provider_message_id"], row["sent_at"]) == (
            "sent",
            f"ses-{email_id}",
            at,
        )


async def test_a_claim_whose_caller_gave_up_is_handed_back(
    store: SqlStore, raw: AsyncEngine
) -> None:
    """A claim cancelled while its batch is being written must not leave the email
    ``sending`` with nobody to send it (the lease would turn it ``unknown``)."""
    job, (email_id,) = await processing_job(store, 1)
    await queue_all(store, job.id)
    claim = asyncio.create_task(store.claim(email_id, 60))
    await asyncio.sleep(0)  # submitted: its batch is on its way
    claim.cancel()

    async def handed_back() -> bool:
        row = await email_row(raw, email_id)
        return row["status"] == EmailStatus.QUEUED and row["attempts"] == 0

    await store.close()  # waits for the batch and the hand-back
    assert await handed_back()
    assert claim.cancelled()


async def test_mark_sent_records_the_send(store: SqlStore, raw: AsyncEngine) -> None:
    job, _ = await processing_job(store, 1)
    email_id = await claimed_email(store, job.id)
    sent_at = datetime(2031, 5, 6, 7, 8, 9, 123456)
    await store.mark_sent(email_id, "ses-0001", sent_at)
    row = await email_row(raw, email_id)
    assert (row["status"], row["provider_message_id"], row["sent_at"]) == (
        "sent",
        "ses-0001",
        sent_at,
    )
    assert row["lease_until"] is None

    await store.mark_final(email_id, EmailStatus.FAILED, "late")  # not claimed any more
    assert (await email_row(raw, email_id))["status"] == EmailStatus.SENT


async def test_a_confirmed_send_overrides_an_expired_lease(store: SqlStore) -> None:
    job, _ = await processing_job(store, 1)
    email_id = await claimed_email(store, job.id)
    assert await store.expire_leases(utcnow() + timedelta(minutes=5)) == 1
    await store.mark_sent(email_id, "ses-late", utcnow())
    assert (await store.job_summary(job.id)).counts[EmailStatus.SENT] == 1


async def test_a_late_confirmation_reopens_a_job_finished_on_the_guess(
    store: SqlStore, raw: AsyncEngine
) -> None:
    """A send confirmed after its lease ran out: the job, finished as failed because the
    email was unknown, is processing again and completes. Recorded in one batch with a
    send still in its lease and a repeated confirmation, which changes nothing."""
    job, (late_id, sent_id) = await processing_job(store, 2)
    other, (other_id,) = await processing_job(store, 1)
    await queue_all(store, job.id)
    await queue_all(store, other.id)
    await store.claim(late_id, 10)
    await store.claim(sent_id, 600)
    await store.claim(other_id, 600)
    await store.mark_sent(sent_id, "ses-sent", utcnow())
    assert await store.expire_leases(utcnow() + timedelta(seconds=60)) == 1
    assert [j.status for j in await store.settle_jobs(utcnow())] == [JobStatus.FAILED]

    await asyncio.gather(
        store.mark_sent(late_id, "ses-late", utcnow()),
        store.mark_sent(other_id, "ses-other", utcnow()),
        store.mark_sent(sent_id, "ses-again", utcnow()),
    )

    assert (await store.job(job.id)).status is JobStatus.PROCESSING
    assert (await store.job(job.id)).finished_at is None
    rows = {i: await email_row(raw, i) for i in (late_id, sent_id, other_id)}
    assert {i: (r["status"], r["provider_message_id"]) for i, r in rows.items()} == {
        late_id: ("sent", "ses-late"),
        sent_id: ("sent", "ses-sent"),
        other_id: ("sent", "ses-other"),
    }
    finished = await store.settle_jobs(utcnow())
    assert [(j.id, j.status) for j in finished] == [
        (job.id, JobStatus.COMPLETED),
        (other.id, JobStatus.COMPLETED),
    ]


async def test_a_confirmation_during_the_settle_keeps_the_job_from_failing(
    mariadb_url: str,
) -> None:
    """The settler reads the counts, then finishes the job in another transaction. A late
    confirmation committing in between (it found the job still processing, so reopened
    nothing) must keep the job from being finished as failed on the old counts."""
    await upgrade_schema(mariadb_url)
    store = await SqlStore.connect(mariadb_url, pool_size=2)
    engine = create_engine(mariadb_url, pool_size=1)
    try:
        job, (sent_id, late_id) = await processing_job(store, 2)
        await queue_all(store, job.id)
        await store.claim(sent_id, 600)
        await store.claim(late_id, 10)
        await store.mark_sent(sent_id, "ses-sent", utcnow())
        assert await store.expire_leases(utcnow() + timedelta(seconds=60)) == 1
        async with engine.connect() as confirmation:
            late = sa.update(email_table).where(email_table.c.id == late_id)
            await confirmation.execute(late.values(status=EmailStatus.SENT))
            settle = asyncio.create_task(store.settle_jobs(utcnow()))
            await asyncio.to_thread(wait_for_lock_wait, mariadb_url.rsplit("/", 1)[1])
            await confirmation.commit()
        assert await settle == []
        assert (await store.job(job.id)).status is JobStatus.PROCESSING
        finished = await store.settle_jobs(utcnow())
        assert [(j.status, j.sent_count) for j in finished] == [(JobStatus.COMPLETED, 2)]
    finally:
        await engine.dispose()
        await store.close()


async def test_mark_retry_requeues_and_may_give_the_attempt_back(
    store: SqlStore, raw: AsyncEngine
) -> None:
    job, _ = await processing_job(store, 1)
    email_id = await claimed_email(store, job.id)
    await store.mark_retry(email_id, "421 try later", count_attempt=True)
    row = await email_row(raw, email_id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("queued", 1, "421 try later")
    assert row["lease_until"] is None

    assert (await store.claim(email_id, 60)).outcome is ClaimOutcome.CLAIMED  # attempt 2
    await store.mark_retry(email_id, None, count_attempt=False)  # throttled: not an attempt
    row = await email_row(raw, email_id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("queued", 1, "421 try later")

    await store.mark_retry(email_id, "not claimed", count_attempt=True)  # no effect
    assert (await email_row(raw, email_id))["last_error"] == "421 try later"


async def test_mark_final_settles_a_claimed_email(store: SqlStore, raw: AsyncEngine) -> None:
    job, _ = await processing_job(store, 2)
    await queue_all(store, job.id)
    for email_id, status in zip(
        await email_ids(store, job.id), [EmailStatus.FAILED, EmailStatus.SUPPRESSED], strict=True
    ):
        await store.claim(email_id, 60)
        await store.mark_final(email_id, status, "x" * 10_000)
        row = await email_row(raw, email_id)
        assert row["status"] == status
        assert row["lease_until"] is None
        assert 100 < len(row["last_error"]) <= 10_000
    with pytest.raises(ValueError, match="sent"):
        await store.mark_final(email_id, EmailStatus.SENT, None)


# --- reconciler --------------------------------------------------------------------------


async def test_expired_leases_become_unknown(store: SqlStore, raw: AsyncEngine) -> None:
    job, ids = await processing_job(store, 2)
    await queue_all(store, job.id)
    await store.claim(ids[0], 10)
    await store.claim(ids[1], 600)
    assert await store.expire_leases(utcnow()) == 0
    assert await store.expire_leases(utcnow() + timedelta(seconds=60)) == 1
    row = await email_row(raw, ids[0])
    assert (row["status"], row["last_error"]) == ("unknown", "lease expired while sending")
    assert (await email_row(raw, ids[1]))["status"] == EmailStatus.SENDING


async def test_stale_queued_emails_are_handed_out_again_and_touched(
    store: SqlStore, raw: AsyncEngine
) -> None:
    job, ids = await processing_job(store, 3)
    await queue_all(store, job.id)
    cutoff = utcnow() - timedelta(minutes=15)
    assert await store.stale_queued(cutoff, 10) == []  # just published
    async with raw.begin() as conn:  # their messages were lost an hour ago
        await conn.execute(sa.update(email_table).values(updated_at=utcnow() - timedelta(hours=1)))
    assert await store.stale_queued(cutoff, 2) == [QueueMessage(i, job.id) for i in ids[:2]]
    assert await store.stale_queued(cutoff, 10) == [QueueMessage(ids[2], job.id)]
    assert await store.stale_queued(cutoff, 10) == []  # touched: not again at once

    await store.set_job_status(job.id, JobStatus.PAUSED)  # paused jobs keep their messages
    assert await store.stale_queued(utcnow() + timedelta(minutes=1), 10) == []


async def test_count_queued_counts_every_queued_email_and_the_stale_ones(
    store: SqlStore, raw: AsyncEngine
) -> None:
    job, ids = await processing_job(store, 4)
    other, _ = await processing_job(store, 3)
    cutoff = utcnow() - timedelta(minutes=15)
    assert await store.count_queued(cutoff) == (0, 0)  # pending is not queued
    await queue_all(store, job.id)
    await queue_all(store, other.id)
    assert await store.count_queued(cutoff) == (7, 0)  # just published

    async with raw.begin() as conn:
        await conn.execute(
            sa.update(email_table)
            .where(email_table.c.id.in_(ids[:3]))
            .values(updated_at=utcnow() - timedelta(hours=1))
        )
    assert await store.count_queued(cutoff) == (7, 3)

    await store.claim(ids[0], 60)  # sending is not queued
    assert await store.count_queued(cutoff) == (6, 2)
    await store.set_job_status(job.id, JobStatus.PAUSED)  # any job: paused ones keep messages
    assert await store.count_queued(cutoff) == (6, 2)
    assert await store.stale_queued(cutoff, 10) == []  # which the reconciler leaves alone
    await store.cancel_job(other.id)
    assert await store.count_queued(cutoff) == (3, 2)


# --- settling and restarting jobs --------------------------------------------------------


async def settle_all(store: SqlStore, job_id: int, outcomes: Sequence[EmailStatus]) -> None:
    ids = await email_ids(store, job_id)
    await queue_all(store, job_id)
    for email_id, outcome in zip(ids, outcomes, strict=False):
        await store.claim(email_id, 60)
        if outcome is EmailStatus.SENT:
            await store.mark_sent(email_id, f"id-{email_id}", utcnow())
        else:
            await store.mark_final(email_id, outcome, f"{outcome.value}!")


async def test_settle_counts_and_finishes_jobs(store: SqlStore) -> None:
    sent, failed, unknown = EmailStatus.SENT, EmailStatus.FAILED, EmailStatus.UNKNOWN
    clean, _ = await processing_job(store, 2)
    broken, _ = await processing_job(store, 3)
    uncertain, _ = await processing_job(store, 2)
    running, _ = await processing_job(store, 3)
    await settle_all(store, clean.id, [sent, sent])
    await settle_all(store, broken.id, [sent, failed, unknown])
    await settle_all(store, uncertain.id, [sent, unknown])
    await settle_all(store, running.id, [sent, failed])  # one email still queued
    now = utcnow()

    finished = {j.id: j for j in await store.settle_jobs(now)}
    assert set(finished) == {clean.id, broken.id, uncertain.id}
    assert finished[clean.id].status is JobStatus.COMPLETED
    assert finished[broken.id].status is JobStatus.FAILED
    assert finished[uncertain.id].status is JobStatus.FAILED  # unknown is not success
    assert (finished[broken.id].sent_count, finished[broken.id].failed_count) == (1, 1)
    assert (await store.job(broken.id)) == finished[broken.id]
    assert finished[clean.id].finished_at == now
    still = await store.job(running.id)
    assert still.status is JobStatus.PROCESSING
    assert (still.total_count, still.sent_count, still.failed_count) == (3, 1, 1)
    assert await store.settle_jobs(utcnow()) == []


async def test_counts_of_a_job_in_flight_are_refreshed_every_ten_seconds(
    store: SqlStore,
) -> None:
    job, ids = await processing_job(store, 3)
    await queue_all(store, job.id)

    async def send(email_id: int) -> None:
        await store.claim(email_id, 60)
        await store.mark_sent(email_id, "id", utcnow())

    now = utcnow()
    assert await store.settle_jobs(now) == []
    await send(ids[0])
    await store.settle_jobs(now + timedelta(seconds=1))
    assert (await store.job(job.id)).sent_count == 0  # counted a second ago
    await store.settle_jobs(now + timedelta(seconds=11))
    assert (await store.job(job.id)).sent_count == 1
    await send(ids[1])
    await send(ids[2])
    finished = await store.settle_jobs(now + timedelta(seconds=12))  # done: counted at once
    assert [(j.status, j.sent_count) for j in finished] == [(JobStatus.COMPLETED, 3)]


async def test_restart_failed_resends_failed_emails_of_failed_jobs(
    store: SqlStore, raw: AsyncEngine
) -> None:
    failed, unknown = EmailStatus.FAILED, EmailStatus.UNKNOWN
    job, ids = await processing_job(store, 3)
    await settle_all(store, job.id, [EmailStatus.SENT, failed, unknown])
    await store.settle_jobs(utcnow())

    assert await store.restart_failed([job.id]) == 1
    row = await email_row(raw, ids[1])
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 0, None)
    restarted = await store.job(job.id)
    assert restarted.status is JobStatus.PROCESSING
    assert restarted.finished_at is None
    assert (await email_row(raw, ids[2]))["status"] == EmailStatus.UNKNOWN
    assert await store.restart_failed([job.id], include_unknown=True) == 1
    assert await store.restart_failed([job.id], include_unknown=True) == 0
    assert await store.restart_failed([]) == 0


async def test_restart_failed_for_every_job_leaves_cancelled_and_paused_ones_be(
    store: SqlStore,
) -> None:
    jobs = [(await processing_job(store, 2))[0] for _ in range(3)]
    for job in jobs:
        await settle_all(store, job.id, [EmailStatus.FAILED, EmailStatus.SENT])
    await store.settle_jobs(utcnow())
    await store.cancel_job(jobs[1].id)
    await store.set_job_status(jobs[2].id, JobStatus.PAUSED)

    assert await store.restart_failed(None) == 2
    statuses = [(await store.job(j.id)).status for j in jobs]
    assert statuses == [JobStatus.PROCESSING, JobStatus.CANCELLED, JobStatus.PAUSED]


async def test_concurrent_restarts_restart_each_email_once(
    store: SqlStore, other_store: SqlStore
) -> None:
    job, _ = await processing_job(store, 40)
    await settle_all(store, job.id, [EmailStatus.FAILED] * 40)
    await store.settle_jobs(utcnow())
    restarts = [s.restart_failed(None) for s in [store, other_store] * 3]
    assert sum(await asyncio.gather(*restarts)) == 40
    summary = await store.job_summary(job.id)
    assert summary.counts[EmailStatus.PENDING] == 40
    assert summary.job.status is JobStatus.PROCESSING


async def test_a_restart_racing_the_settler_never_finishes_a_job_with_pending_emails(
    store: SqlStore, other_store: SqlStore
) -> None:
    job, _ = await processing_job(store, 20)
    await settle_all(store, job.id, [EmailStatus.FAILED] * 20)
    _settled, restarted = await asyncio.gather(
        store.settle_jobs(utcnow()), other_store.restart_failed([job.id])
    )
    final = await store.job(job.id)
    assert restarted == 20
    assert final.status is JobStatus.PROCESSING  # whichever ran first, pending work wins


# --- the fleet of sending processes ------------------------------------------------------


async def test_instances_beat_expire_and_leave(store: SqlStore, other_store: SqlStore) -> None:
    start = utcnow()
    later = start + timedelta(seconds=20)
    early, late = start - timedelta(seconds=15), later - timedelta(seconds=15)
    assert await store.heartbeat_instance("task-b", start, early) == LiveInstances(1, "task-b")
    assert await other_store.heartbeat_instance("task-a", start, early) == (2, "task-a")
    assert await store.heartbeat_instance("task-b", start, early) == (2, "task-a")
    # task-a stopped beating: at the next beat of task-b it has expired.
    assert await store.heartbeat_instance("task-b", later, late) == (1, "task-b")
    await other_store.heartbeat_instance("task-a", later, late)
    await other_store.remove_instance("task-a")
    await other_store.remove_instance("task-a")  # leaving twice is harmless
    assert await store.heartbeat_instance("task-b", later, late) == (1, "task-b")


async def test_lowest_live_instance_skips_expired_rows(
    store: SqlStore, other_store: SqlStore
) -> None:
    now = utcnow()
    assert await store.lowest_live_instance(now - timedelta(seconds=6)) is None
    await other_store.heartbeat_instance(
        "task-a", now - timedelta(seconds=10), now - timedelta(seconds=30)
    )
    await store.heartbeat_instance("task-b", now, now - timedelta(seconds=15))
    assert await store.lowest_live_instance(now - timedelta(seconds=15)) == "task-a"
    # Nobody has deleted task-a's row yet, but it is older than the expiry.
    assert await store.lowest_live_instance(now - timedelta(seconds=6)) == "task-b"


async def test_concurrent_heartbeats_count_every_live_instance(
    store: SqlStore, other_store: SqlStore
) -> None:
    now = utcnow()
    beats = [
        s.heartbeat_instance(f"task-{i}", now, now - timedelta(seconds=15))
        for i, s in enumerate([store, other_store] * 5)
    ]
    await asyncio.gather(*beats)
    seen = await store.heartbeat_instance("task-0", now, now - timedelta(seconds=15))
    assert seen == (10, "task-0")


# --- connections ----------------------------------------------------------------------------


async def test_an_unreachable_database_is_a_retryable_error(mariadb_server: str) -> None:
    unreachable = await SqlStore.connect(f"mysql://root@127.0.0.1:{free_port()}/nothing")
    try:
        with pytest.raises(RetryableError, match="unavailable"):
            await unreachable.jobs()
    finally:
        await unreachable.close()


async def test_the_store_survives_its_connections_being_killed(mariadb_url: str) -> None:
    await upgrade_schema(mariadb_url)
    survivor = await SqlStore.connect(mariadb_url, pool_size=2)
    try:
        job = await survivor.create_job("a", "t", "from@example.com")
        database = mariadb_url.rsplit("/", 1)[1]
        conn = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root", autocommit=True)
        with conn.cursor() as cur:
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s", (database,))
            for (thread_id,) in cur.fetchall():
                cur.execute(f"KILL CONNECTION {int(thread_id)}")
        conn.close()
        assert (await survivor.job(job.id)).id == job.id
    finally:
        await survivor.close()


async def test_a_connection_lost_after_an_answer_is_retryable_and_not_run_again(
    mariadb_url: str,
) -> None:
    """Only a connection lost before its first answer is retried on another one: later,
    the transaction may have done anything the server answered, and is the caller's."""
    await upgrade_schema(mariadb_url)
    store = await SqlStore.connect(mariadb_url, pool_size=1)
    runs = 0

    async def work(conn: AsyncConnection) -> None:
        nonlocal runs
        runs += 1
        thread_id = await conn.scalar(sa.text("SELECT CONNECTION_ID()"))
        await asyncio.to_thread(kill_connection, int(thread_id))
        await conn.execute(sa.text("SELECT 1"))

    try:
        with pytest.raises(RetryableError, match="unavailable"):
            await store._db.run(work)
        assert runs == 1
        assert await store.jobs() == []  # and the pool has a live connection again
    finally:
        await store.close()


def kill_connection(thread_id: int) -> None:
    conn = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"KILL CONNECTION {thread_id}")
    finally:
        conn.close()


async def test_a_connection_given_back_mid_transaction_is_rolled_back(
    store: SqlStore, database_url: str
) -> None:
    """The pool skips its ROLLBACK after our COMMITs; a transaction that was never ended
    must still be rolled back, or its changes and locks would leak to the next user."""
    await store.create_job("original", "t", "from@example.com")
    engine = create_engine(database_url, pool_size=1)  # one connection, handed out again

    def leave_a_transaction_open(sync_conn: sa.Connection) -> None:
        cursor = sync_conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute("BEGIN")  # behind SQLAlchemy's back
        cursor.execute("UPDATE delivery_job SET name = 'leaked'")  # the only job

    try:
        async with engine.connect() as conn:
            await conn.run_sync(leave_a_transaction_open)
        async with engine.connect() as conn:
            name = await conn.scalar(
                sa.select(sa.column("name")).select_from(sa.table("delivery_job"))
            )
        assert name == "original"
    finally:
        await engine.dispose()


# --- round trips --------------------------------------------------------------------------

# Session counters of MariaDB: statements (Questions), pings (admin commands) and the rest.
ROUND_TRIP_COUNTERS = (
    "Questions",
    "Com_select",
    "Com_update",
    "Com_commit",
    "Com_rollback",
    "Com_admin_commands",
    "Com_set_option",
)


async def round_trips(store: SqlStore, during: Callable[[], Awaitable[Any]]) -> dict[str, int]:
    """What ``during()`` cost in round trips, from the counters of the store's one
    pooled connection (the two readings' own SHOW and COMMIT taken off)."""

    async def counters(conn: AsyncConnection) -> dict[str, int]:
        names = ", ".join(f"'{name}'" for name in ROUND_TRIP_COUNTERS)
        query = sa.text(f"SHOW SESSION STATUS WHERE Variable_name IN ({names})")
        return {name: int(value) for name, value in await conn.execute(query)}

    before = await store._db.run(counters, write=False)
    await during()
    after = await store._db.run(counters, write=False)
    spent = {name: after[name] - before[name] for name in ROUND_TRIP_COUNTERS}
    spent["Questions"] -= 2  # the first reading's COMMIT and the second one's SHOW
    spent["Com_commit"] -= 1
    return {name: count for name, count in spent.items() if count}


async def test_claims_and_send_records_cost_only_their_statements(mariadb_url: str) -> None:
    """Each round trip to the database costs the server CPU (a syscall each way): a batch
    of claims or of send records pays for its statements and one COMMIT, and nothing
    else (no ping at checkout, no ROLLBACK after the COMMIT, no SET)."""
    await upgrade_schema(mariadb_url)
    store = await SqlStore.connect(mariadb_url, pool_size=1)
    try:
        job, ids = await processing_job(store, 5)
        await queue_all(store, job.id)

        async def claims() -> None:
            await asyncio.gather(*(store.claim(i, 60) for i in ids))

        async def sends() -> None:
            await asyncio.gather(*(store.mark_sent(i, f"ses-{i}", utcnow()) for i in ids))

        assert await round_trips(store, claims) == {
            "Questions": 3,
            "Com_select": 1,
            "Com_update": 1,
            "Com_commit": 1,
        }
        assert await round_trips(store, sends) == {
            "Questions": 2,
            "Com_update": 1,
            "Com_commit": 1,
        }
    finally:
        await store.close()


async def test_concurrent_pushes_in_different_locales_never_share_a_version(
    store: SqlStore, other_store: SqlStore
) -> None:
    pushes = [
        s.add_template(Template("letter", locale, 0, f"S{i}", "T"))
        for i, (s, locale) in enumerate(
            zip([store, other_store] * 4, ["en", "de", "fr", "en"] * 2, strict=True)
        )
    ]
    versions = sorted(t.version for t in await asyncio.gather(*pushes))
    assert versions == [1, 2, 3, 4, 5, 6, 7, 8]
