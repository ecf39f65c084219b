"""The ``ports.Store`` contract on an upstream system's own tables (DESIGN §11).

The whole suite of ``test_store.py`` runs again, on MariaDB and SQLite, with the old job
manager's tables of ``tests/support/legacy_schema.py`` mapped by ``config/schema-map.toml``
(CHAR(1) states, their own column names, integer keys not named ``id``): every store the
suite opens, and every upgrade it runs, is the mapped one. The tests after it check what
only a mapped schema has: rows upstream inserts in its own format, their status column
kept showing the coarse state, and maps that do not match the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa

from delivery_server.adapters.store_sql import upgrade_schema
from delivery_server.adapters.store_sql.legacy_store import MappedSqlStore
from delivery_server.errors import ConfigError
from delivery_server.models import ClaimOutcome, EmailStatus, JobStatus, NewEmail, utcnow
from delivery_server.schema_map import parse_schema_map
from tests.contract import test_store as suite
from tests.contract.conftest import STORE_BACKENDS
from tests.contract.test_store import publish_into, queue_all
from tests.support.legacy_schema import create_legacy_tables, eed_job, eed_mail, schema_map

pytestmark = pytest.mark.timeout(60)

# About our own schema, our connections and our statement counts, not the mapping: they
# stay in test_store.py. (Connecting to a mapped store checks the map, so an unreachable
# database is refused at connect rather than at the first call.)
NOT_ABOUT_THE_MAP = {
    "test_migrations_build_exactly_the_schema_module",
    "test_bad_urls_are_configuration_errors",
    "test_an_unreachable_database_is_a_retryable_error",
    "test_the_store_survives_its_connections_being_killed",
    "test_a_connection_lost_after_an_answer_is_retryable_and_not_run_again",
    "test_a_connection_given_back_mid_transaction_is_rolled_back",
    "test_claims_and_send_records_cost_only_their_statements",
}
globals().update(
    {
        name: test
        for name, test in vars(suite).items()
        if name.startswith("test_") and name not in NOT_ABOUT_THE_MAP
    }
)


class MappedStores:
    """Stands in for ``SqlStore`` inside the suite: its stores are mapped ones."""

    @staticmethod
    async def connect(database_url: str, *, pool_size: int = 10) -> MappedSqlStore:
        return await MappedSqlStore.connect_mapped(database_url, schema_map(), pool_size=pool_size)


async def upgrade_mapped(database_url: str) -> None:
    await create_legacy_tables(database_url)
    await upgrade_schema(database_url, schema_map())


def run_suite_mapped(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> None:
    monkeypatch.setattr(module, "SqlStore", MappedStores)
    monkeypatch.setattr(module, "upgrade_schema", upgrade_mapped)


@pytest.fixture(autouse=True)
def _mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    run_suite_mapped(monkeypatch, suite)


@pytest.fixture(params=STORE_BACKENDS)
async def database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(request.param)
    await upgrade_mapped(url)
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[MappedSqlStore]:
    opened = await MappedStores.connect(database_url, pool_size=5)
    yield opened
    await opened.close()


@pytest.fixture
async def other_store(database_url: str) -> AsyncIterator[MappedSqlStore]:
    opened = await MappedStores.connect(database_url, pool_size=5)
    yield opened
    await opened.close()


async def their_rows(store: MappedSqlStore, table: sa.Table) -> list[sa.RowMapping]:
    async def read(conn: Any) -> list[sa.RowMapping]:
        return list((await conn.execute(sa.select(table).order_by(*table.primary_key))).mappings())

    return await store._db.run(read, write=False)


async def upstream_job(store: MappedSqlStore, recipients: int, *, params: str = "") -> int:
    """A job and its emails inserted the old way, then set to processing."""

    async def work(conn: Any) -> int:
        result = await conn.execute(
            sa.insert(eed_job).values(state="N", template="statement", sender="bank@example.com")
        )
        job_id = int(result.inserted_primary_key[0])
        rows = [
            {
                "job_id": job_id,
                "recipient": f"old{i}@example.com",
                "params": params or f'{{"n": {i}}}',
                "state": "P",
            }
            for i in range(recipients)
        ]
        await conn.execute(sa.insert(eed_mail), rows)
        await conn.execute(sa.update(eed_job).where(eed_job.c.job_id == job_id).values(state="P"))
        return job_id

    return await store._db.run(work)


# --- what only a mapped schema has ---------------------------------------------------------


async def test_a_job_inserted_upstream_is_taken_over_published_and_sent(
    store: MappedSqlStore,
) -> None:
    job_id = await upstream_job(store, 3)

    (due,) = await store.due_jobs(utcnow())
    assert (due.id, due.status, due.total_count) == (job_id, JobStatus.PROCESSING, 3)
    queued = await queue_all(store, job_id)
    mail_ids = [row["mail_id"] for row in await their_rows(store, eed_mail)]
    assert queued == mail_ids  # their ids are ours
    for n, mail_id in enumerate(queued):
        claimed = await store.claim(mail_id, 60)
        assert claimed.claimed is not None
        assert claimed.claimed.email.to_address == f"old{n}@example.com"
        assert claimed.claimed.email.variables == {"n": n}
    await store.mark_sent(queued[0], "ses-0", utcnow())
    await store.mark_final(queued[1], EmailStatus.FAILED, "mailbox unavailable")
    # Still sending: their column shows pending's value.
    rows = {row["mail_id"]: row for row in await their_rows(store, eed_mail)}
    assert [rows[i]["state"] for i in queued] == ["S", "F", "P"]
    assert (rows[queued[0]]["msg_id"], rows[queued[1]]["error"]) == ("ses-0", "mailbox unavailable")
    assert rows[queued[0]]["sent_time"] is not None

    await store.mark_sent(queued[2], "ses-2", utcnow())
    (finished,) = await store.settle_jobs(utcnow())
    assert finished.status is JobStatus.FAILED
    (job_row,) = await their_rows(store, eed_job)
    assert job_row["state"] == "F"
    assert job_row["done_at"] is not None

    assert await store.restart_failed([job_id]) == 1
    (job_row,) = await their_rows(store, eed_job)
    rows = {row["mail_id"]: row for row in await their_rows(store, eed_mail)}
    assert (job_row["state"], rows[queued[1]]["state"]) == ("P", "P")


async def test_two_publishers_take_over_an_upstream_job_once(
    store: MappedSqlStore, other_store: MappedSqlStore
) -> None:
    job_id = await upstream_job(store, 5)
    taken = [await store.take_over(), await other_store.take_over()]
    assert taken == [1, 0]
    # An upstream schema knows only email (DESIGN §11, §12).
    assert ((await store.job(job_id)).channel, (await store.job(job_id)).target) == ("email", None)
    sink: list[int] = []
    await store.publish_pending(job_id, 100, publish_into(sink))
    await other_store.publish_pending(job_id, 100, publish_into(sink))
    assert len(sink) == len(set(sink)) == 5


async def test_upstream_variables_that_are_not_json_fail_the_email_unsent(
    store: MappedSqlStore,
) -> None:
    job_id = await upstream_job(store, 1, params="not json")
    await store.due_jobs(utcnow())
    assert await queue_all(store, job_id) == []
    summary = await store.job_summary(job_id)
    assert summary.counts[EmailStatus.FAILED] == 1
    (row,) = await their_rows(store, eed_mail)
    assert row["state"] == "P"  # taken over as failed: no update of ours, theirs unchanged


async def test_upstream_pausing_and_cancelling_a_job_is_followed(store: MappedSqlStore) -> None:
    job_id = await upstream_job(store, 2)
    await store.due_jobs(utcnow())

    async def set_theirs(state: str) -> None:
        async def work(conn: Any) -> None:
            await conn.execute(
                sa.update(eed_job).where(eed_job.c.job_id == job_id).values(state=state)
            )

        await store._db.run(work)

    await set_theirs("H")
    assert await store.due_jobs(utcnow()) == []
    assert (await store.job(job_id)).status is JobStatus.PAUSED
    first = (await store.claim((await their_rows(store, eed_mail))[0]["mail_id"], 60)).outcome
    assert first is ClaimOutcome.NOT_QUEUED
    await set_theirs("P")
    assert [j.id for j in await store.due_jobs(utcnow())] == [job_id]
    await set_theirs("X")
    await store.due_jobs(utcnow())
    summary = await store.job_summary(job_id)
    assert summary.job.status is JobStatus.CANCELLED
    assert summary.counts[EmailStatus.CANCELLED] == 2


async def test_jobs_created_through_the_store_get_their_ids(store: MappedSqlStore) -> None:
    created = await store.create_job("march", "statement", "bank@example.com")
    await store.add_emails(created.id, [NewEmail("a@example.com", {"n": 1}, locale="fr")])
    (job_row,) = await their_rows(store, eed_job)
    (mail_row,) = await their_rows(store, eed_mail)
    assert (job_row["job_id"], job_row["state"], job_row["title"]) == (created.id, "N", "march")
    assert (mail_row["job_id"], mail_row["recipient"], mail_row["lang"]) == (
        created.id,
        "a@example.com",
        "fr",
    )
    assert (await store.job(created.id)).total_count == 1


LEGACY_MAP: dict[str, Any] = {
    "job": {
        "table": "eed_job",
        "columns": {"id": "job_id", "status": "state", "template_name": "template",
                    "from_address": "sender"},
        "status": {"processing": "P", "completed": "D", "failed": "F", "paused": "H",
                   "cancelled": "X", "draft": "N"},
    },
    "email": {
        "table": "eed_mail",
        "columns": {"id": "mail_id", "to_address": "recipient", "variables": "params",
                    "status": "state"},
        "status": {"pending": "P", "sent": "S", "failed": "F"},
    },
}  # fmt: skip


def changed(section: str, part: str, key: str, value: Any) -> dict[str, Any]:
    import copy

    data = copy.deepcopy(LEGACY_MAP)
    if part:
        data[section][part][key] = value
    else:
        data[section][key] = value
    return data


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (changed("email", "", "table", "eed_mails"), "email.table"),
        (changed("email", "columns", "to_address", "rcpt"), "email.columns.to_address"),
        (changed("job", "columns", "finished_at", "ended"), "job.columns.finished_at"),
        (changed("job", "status", "draft", "NEW"), "job.status.draft"),
    ],
)
async def test_a_map_that_does_not_match_the_database_names_the_key(
    mariadb_url: str, data: dict[str, Any], key: str
) -> None:
    await create_legacy_tables(mariadb_url)
    with pytest.raises(ConfigError, match=rf"DELIVERY_SCHEMA_MAP: {key}: "):
        await upgrade_schema(mariadb_url, parse_schema_map(data))
    with pytest.raises(ConfigError, match=rf"DELIVERY_SCHEMA_MAP: {key}: "):
        await MappedSqlStore.connect_mapped(mariadb_url, parse_schema_map(data))


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (changed("email", "status", "sent", "P"), "email.status.pending"),
        (changed("email", "status", "delivered", "D"), "email.status.delivered"),
        (changed("job", "status", "processing", "D"), "job.status.processing"),
        (changed("email", "columns", "colour", "c"), "email.columns.colour"),
        (changed("email", "status", "sent", "S'; DROP TABLE x"), "email.status.sent"),
    ],
)
def test_a_map_that_cannot_work_names_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"DELIVERY_SCHEMA_MAP: {key}: "):
        parse_schema_map(data)


def test_the_example_map_parses() -> None:
    mapped = schema_map()
    assert mapped.email.values["queued"] == "P"
    assert mapped.email.values["unknown"] == "F"
    assert mapped.email.canonical("P") == "pending"
