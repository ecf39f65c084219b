"""Restart by kind (issue 11 §5), on MariaDB and SQLite: ``--transient-only`` leaves
permanent failures failed, ``--error TEXT`` restarts those whose last error contains the
text, and the kind a failure records (``delivery_email.failure_kind``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from delivery_server.adapters.store_sql import SqlStore, upgrade_schema
from delivery_server.adapters.store_sql.engine import create_engine
from delivery_server.adapters.store_sql.migrate import alembic_config
from delivery_server.adapters.store_sql.schema import email as email_table
from delivery_server.models import (
    ERASED_ADDRESS,
    ClaimOutcome,
    EmailStatus,
    FailureKind,
    JobStatus,
    NewEmail,
    QueueMessage,
    utcnow,
)
from tests.contract.conftest import STORE_BACKENDS

pytestmark = pytest.mark.timeout(60)

PERMANENT, TRANSIENT = FailureKind.PERMANENT, FailureKind.TRANSIENT


Outcome = tuple[EmailStatus, str, FailureKind | None]


async def failed_job(store: SqlStore, outcomes: Sequence[Outcome]) -> tuple[int, list[int]]:
    """A job whose emails each settled as (status, last_error, kind), then finished."""
    created = await store.create_job("statements", "statement", "bank@example.com")
    await store.add_emails(
        created.id, (NewEmail(f"c{i}@example.com", {"n": i}) for i in range(len(outcomes)))
    )
    await store.set_job_status(created.id, JobStatus.PROCESSING)
    ids: list[int] = []

    async def publish(messages: Sequence[QueueMessage]) -> set[int]:
        ids.extend(m.email_id for m in messages)
        return set()

    await store.publish_pending(created.id, 1000, publish)
    for email_id, (status, error, kind) in zip(ids, outcomes, strict=True):
        assert (await store.claim(email_id, 60)).outcome is ClaimOutcome.CLAIMED
        await store.mark_final(email_id, status, error, kind=kind)
    await store.settle_jobs(utcnow())
    assert (await store.job(created.id)).status is JobStatus.FAILED
    return created.id, ids


async def rows(raw: AsyncEngine, ids: Sequence[int]) -> list[dict[str, Any]]:
    async with raw.connect() as conn:
        result = await conn.execute(
            sa.select(email_table.c.status, email_table.c.last_error, email_table.c.failure_kind)
            .where(email_table.c.id.in_(ids))
            .order_by(email_table.c.id)
        )
        return [dict(row) for row in result.mappings()]


async def test_a_failure_records_its_kind_and_a_restart_clears_it(
    store: SqlStore, raw: AsyncEngine
) -> None:
    failed, unknown = EmailStatus.FAILED, EmailStatus.UNKNOWN
    job_id, ids = await failed_job(
        store,
        [
            (failed, "PermanentError: invalid recipient address", PERMANENT),
            (failed, "RetryableError: SMTP 451", TRANSIENT),
            (failed, "KeyError: 'x'", None),  # not given: its attempts ran out
            (unknown, "UncertainSendError: read timeout", None),
        ],
    )
    assert [r["failure_kind"] for r in await rows(raw, ids)] == [
        "permanent",
        "transient",
        "transient",
        None,
    ]
    assert await store.restart_failed([job_id]) == 3
    after = await rows(raw, ids)
    assert [(r["status"], r["failure_kind"]) for r in after[:3]] == [("pending", None)] * 3


async def test_transient_only_leaves_permanent_failures_failed(
    store: SqlStore, raw: AsyncEngine
) -> None:
    failed, unknown = EmailStatus.FAILED, EmailStatus.UNKNOWN
    job_id, ids = await failed_job(
        store,
        [
            (failed, "PermanentError: missing variable 'balance'", PERMANENT),
            (failed, "RetryableError: SMTP 451 try later", TRANSIENT),
            (unknown, "lease expired while sending", None),
        ],
    )
    assert await store.restart_failed([job_id], transient_only=True) == 1
    assert [r["status"] for r in await rows(raw, ids)] == ["failed", "pending", "unknown"]
    permanent = (await rows(raw, ids[:1]))[0]
    assert permanent["last_error"] == "PermanentError: missing variable 'balance'"
    assert (await store.job(job_id)).status is JobStatus.PROCESSING

    # Unknown emails are not permanent failures: --include-unknown still takes them.
    assert await store.restart_failed([job_id], True, transient_only=True) == 1
    assert await store.restart_failed([job_id], True, transient_only=True) == 0
    assert await store.restart_failed(None) == 1  # without the flag: the permanent one too


async def test_error_text_matches_a_substring_with_like_metacharacters_escaped(
    store: SqlStore, raw: AsyncEngine
) -> None:
    failed = EmailStatus.FAILED
    job_id, ids = await failed_job(
        store,
        [
            (failed, "RetryableError: SMTP 451 4.7.1 Greylisted", TRANSIENT),
            (failed, "RetryableError: quota 100%_used", TRANSIENT),
            (failed, "RetryableError: quota 1000 used", TRANSIENT),  # '100%_' unescaped
            (failed, "PermanentError: SMTP 550 mailbox unavailable", PERMANENT),
        ],
    )
    assert await store.restart_failed([job_id], error_contains="no such text") == 0
    assert await store.restart_failed([job_id], error_contains="100%_") == 1
    assert [r["status"] for r in await rows(raw, ids)][1:3] == ["pending", "failed"]
    assert await store.restart_failed([job_id], error_contains="greylisted") == 1  # any case
    # Both filters at once: 'SMTP' matches the permanent one, which stays.
    assert await store.restart_failed([job_id], error_contains="SMTP", transient_only=True) == 0
    assert await store.restart_failed([job_id], error_contains="SMTP 550") == 1
    assert [r["status"] for r in await rows(raw, ids)] == [
        "pending",
        "pending",
        "failed",
        "pending",
    ]


async def test_emails_erased_by_retention_are_never_restarted(
    store: SqlStore, raw: AsyncEngine
) -> None:
    failed = EmailStatus.FAILED
    job_id, ids = await failed_job(
        store, [(failed, "RetryableError: x", TRANSIENT), (failed, "RetryableError: y", TRANSIENT)]
    )
    async with raw.begin() as conn:
        await conn.execute(
            sa.update(email_table)
            .where(email_table.c.id == ids[0])
            .values(to_address=ERASED_ADDRESS, variables={})
        )
    assert await store.restart_failed([job_id]) == 1
    assert [r["status"] for r in await rows(raw, ids)] == ["failed", "pending"]


@pytest.mark.parametrize("backend", STORE_BACKENDS)
async def test_r0006_classifies_earlier_failures_from_their_last_error(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(backend)
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0005"))
            await _insert_failures(conn)
        await upgrade_schema(url)
        async with engine.connect() as conn:
            kinds = (
                await conn.execute(
                    sa.text("SELECT last_error, failure_kind FROM delivery_email ORDER BY id")
                )
            ).all()
    finally:
        await engine.dispose()
    assert [tuple(k) for k in kinds] == [
        ("PermanentError: invalid recipient address", "permanent"),
        ("RetryableError: SMTP 451", None),
        ("PermanentError: not sent", None),  # sent later: not a failure
    ]


async def _insert_failures(conn: AsyncConnection) -> None:
    await conn.execute(
        sa.text(
            "INSERT INTO delivery_job (id, name, template_name, from_address)"
            " VALUES (1, 'old', 'statement', 'bank@example.com')"
        )
    )
    for status, error in (
        ("failed", "PermanentError: invalid recipient address"),
        ("failed", "RetryableError: SMTP 451"),
        ("sent", "PermanentError: not sent"),
    ):
        await conn.execute(
            sa.text(
                "INSERT INTO delivery_email (job_id, to_address, variables, status, last_error)"
                " VALUES (1, 'c@example.com', '{}', :status, :error)"
            ),
            {"status": status, "error": error},
        )
