"""Retention (issue 11 §8): ``db purge`` and the daily pass erase the addresses, variables
and attachment refs of finished jobs' emails past ``DELIVERY_RETENTION_DAYS``, keep
everything else, in batches, and never touch a job that is running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from delivery_server.adapters.store_sql import SqlStore, upgrade_schema
from delivery_server.adapters.store_sql.engine import create_engine
from delivery_server.adapters.store_sql.retention import ERASE_ORDER
from delivery_server.adapters.store_sql.schema import email as email_table
from delivery_server.adapters.store_sql.schema import job as job_table
from delivery_server.models import (
    AttachmentRef,
    EmailStatus,
    JobStatus,
    NewEmail,
    QueueMessage,
    utcnow,
)
from delivery_server.retention import Retention
from tests.support.cli_runner import Cli

pytestmark = pytest.mark.timeout(90)

STATEMENT = AttachmentRef("file:statement.pdf", "statement.pdf", "application/pdf")
PERSONAL = ("to_address", "variables", "attachments")
KEPT = ("status", "attempts", "last_error", "provider_message_id", "created_at", "updated_at")


@pytest.fixture(params=["mariadb_url", "sqlite_url"])
async def database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(request.param)
    await upgrade_schema(url)
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.connect(database_url, pool_size=5)
    yield opened
    await opened.close()


@pytest.fixture
async def raw(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


async def job_with_outcomes(
    store: SqlStore, outcomes: Sequence[EmailStatus], *, finish: bool = True
) -> tuple[int, list[int]]:
    """A job whose emails settled as ``outcomes`` (queued ones left queued)."""
    created = await store.create_job("statements", "statement", "bank@example.com")
    await store.add_emails(
        created.id,
        (
            NewEmail(f"c{i}@example.com", {"balance": f"{i}.00"}, attachments=(STATEMENT,))
            for i in range(len(outcomes))
        ),
    )
    await store.set_job_status(created.id, JobStatus.PROCESSING)
    ids: list[int] = []

    async def publish(messages: Sequence[QueueMessage]) -> set[int]:
        ids.extend(m.email_id for m in messages)
        return set()

    await store.publish_pending(created.id, 1000, publish)
    for email_id, outcome in zip(ids, outcomes, strict=True):
        if outcome is EmailStatus.QUEUED:
            continue
        await store.claim(email_id, 60)
        if outcome is EmailStatus.SENT:
            await store.mark_sent(email_id, f"ses-{email_id}", utcnow())
        else:
            await store.mark_final(email_id, outcome, "RetryableError: 451")
    if finish:
        await store.settle_jobs(utcnow())
    return created.id, ids


async def finished_days_ago(raw: AsyncEngine, job_id: int, days: float) -> None:
    async with raw.begin() as conn:
        await conn.execute(
            sa.update(job_table)
            .where(job_table.c.id == job_id)
            .values(finished_at=utcnow() - timedelta(days=days))
        )


async def email_rows(raw: AsyncEngine, job_id: int) -> list[dict[str, Any]]:
    async with raw.connect() as conn:
        result = await conn.execute(
            sa.select(email_table).where(email_table.c.job_id == job_id).order_by(email_table.c.id)
        )
        return [dict(row) for row in result.mappings()]


async def purged_at(raw: AsyncEngine, job_id: int) -> object:
    async with raw.connect() as conn:
        return await conn.scalar(sa.select(job_table.c.purged_at).where(job_table.c.id == job_id))


async def test_a_pass_erases_old_finished_jobs_in_batches_and_keeps_the_rest(
    store: SqlStore, raw: AsyncEngine
) -> None:
    sent, failed, unknown = EmailStatus.SENT, EmailStatus.FAILED, EmailStatus.UNKNOWN
    old, _ = await job_with_outcomes(store, [sent] * 5 + [failed] * 3 + [unknown] * 2)
    recent, _ = await job_with_outcomes(store, [sent, failed])
    cancelled, _ = await job_with_outcomes(store, [sent, EmailStatus.QUEUED], finish=False)
    await store.cancel_job(cancelled)
    await finished_days_ago(raw, old, 91)
    await finished_days_ago(raw, recent, 89)
    await finished_days_ago(raw, cancelled, 200)
    before = {j: await email_rows(raw, j) for j in (old, recent, cancelled)}
    counts_before = (await store.job(old)).sent_count, (await store.job(old)).failed_count

    report = await Retention(store, days=90, batch_size=3).purge_once()

    assert (report.purged, report.erased, report.unfinished) == (2, 12, 0)
    for job_id in (old, cancelled):
        after = await email_rows(raw, job_id)
        assert [(r["to_address"], r["variables"], r["attachments"]) for r in after] == [
            ("", {}, None)
        ] * len(after)
        assert [[r[k] for k in KEPT] for r in after] == [
            [r[k] for k in KEPT] for r in before[job_id]
        ]
        assert await purged_at(raw, job_id) is not None
    assert await email_rows(raw, recent) == before[recent]  # 89 days: not yet
    assert await purged_at(raw, recent) is None
    job = await store.job(old)
    assert (job.status, (job.sent_count, job.failed_count)) == (JobStatus.FAILED, counts_before)
    # Idempotent: a purged job is not taken again.
    assert (await Retention(store, days=90).purge_once()).jobs == ()


async def test_a_purge_while_a_job_runs_leaves_its_emails_untouched(
    store: SqlStore, raw: AsyncEngine
) -> None:
    sent = EmailStatus.SENT
    running, _ = await job_with_outcomes(store, [sent, EmailStatus.QUEUED, EmailStatus.FAILED])
    paused, _ = await job_with_outcomes(store, [sent, EmailStatus.QUEUED])
    await store.set_job_status(paused, JobStatus.PAUSED)
    # An old finished_at left over from an earlier run (a restarted job) does not count.
    for job_id in (running, paused):
        await finished_days_ago(raw, job_id, 400)
    before = {j: await email_rows(raw, j) for j in (running, paused)}

    report = await Retention(store, days=1).purge_once()

    assert report.jobs == ()
    for job_id in (running, paused):
        assert await email_rows(raw, job_id) == before[job_id]


async def test_a_job_reopened_halfway_stops_the_purge_and_resends_only_unerased_emails(
    store: SqlStore, raw: AsyncEngine
) -> None:
    failed = EmailStatus.FAILED
    job_id, _ = await job_with_outcomes(store, [failed] * 6)
    await finished_days_ago(raw, job_id, 100)
    # One look per status before it (each finds none), one batch of failed, then stopped.
    looks = iter([True] * (ERASE_ORDER.index(failed) + 1) + [False])
    first = await store.purge_job(job_id, utcnow() - timedelta(days=90), 4, lambda: next(looks))
    assert (first.erased, first.complete) == (4, False)

    assert await store.restart_failed([job_id]) == 2  # the erased four stay failed
    rows = await email_rows(raw, job_id)
    assert [(r["status"], r["to_address"] == "") for r in rows] == [("failed", True)] * 4 + [
        ("pending", False)
    ] * 2
    again = await store.purge_job(job_id, utcnow() - timedelta(days=90), 4)
    assert (again.erased, again.complete) == (0, False)  # processing now: untouched
    assert await email_rows(raw, job_id) == rows
    assert await purged_at(raw, job_id) is None


async def test_the_daily_pass_runs_by_itself_and_stops_with_the_server(
    store: SqlStore, raw: AsyncEngine
) -> None:
    job_id, _ = await job_with_outcomes(store, [EmailStatus.SENT] * 3)
    await finished_days_ago(raw, job_id, 31)
    stop = asyncio.Event()
    retention = Retention(store, days=30, interval=0.05, first_pass_spread=0.0)
    running = asyncio.create_task(retention.run(stop))
    while await purged_at(raw, job_id) is None:
        assert not running.done(), running
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(running, timeout=10)
    assert {r["to_address"] for r in await email_rows(raw, job_id)} == {""}


# --- the command line ---------------------------------------------------------------------


def test_db_purge_command_and_its_bad_input(
    sqlite_url: str, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DELIVERY_DATABASE_URL", sqlite_url)
    assert cli("db", "upgrade").code == 0

    job_id = asyncio.run(_finished_job(sqlite_url, days_ago=40))

    kept = cli("db", "purge", "--json")  # DELIVERY_RETENTION_DAYS: 90 by default
    assert kept.code == 0, kept.err
    assert kept.json()["jobs_purged"] == 0
    purged = cli("db", "purge", "--older-than", "30")
    assert purged.code == 0, purged.err
    assert "purged 1 jobs" in purged.out
    assert "2 emails erased" in purged.out
    assert asyncio.run(_addresses(sqlite_url, job_id)) == {""}

    for bad in ("0", "-3", "soon"):
        result = cli("db", "purge", "--older-than", bad)
        assert result.code == 2
        assert "--older-than" in result.err
    monkeypatch.setenv("DELIVERY_RETENTION_DAYS", "0")
    result = cli("db", "purge")
    assert result.code == 2
    assert "DELIVERY_RETENTION_DAYS" in result.err


async def _finished_job(url: str, days_ago: int) -> int:
    store = await SqlStore.connect(url)
    engine = create_engine(url, pool_size=1)
    try:
        job_id, _ = await job_with_outcomes(store, [EmailStatus.SENT, EmailStatus.FAILED])
        await finished_days_ago(engine, job_id, days_ago)
        return job_id
    finally:
        await store.close()
        await engine.dispose()


async def _addresses(url: str, job_id: int) -> set[str]:
    engine = create_engine(url, pool_size=1)
    try:
        return {r["to_address"] for r in await email_rows(engine, job_id)}
    finally:
        await engine.dispose()
