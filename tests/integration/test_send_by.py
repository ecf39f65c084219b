"""Send-by deadlines end to end: ``jobs create --send-by``, an embedded server (SQLite,
the in-process queue, the outbox) that sends until the deadline and not after it, and
``jobs show`` saying how many emails expired.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from delivery_server.adapters.store_sql.engine import create_engine
from delivery_server.adapters.store_sql.schema import email as email_table
from delivery_server.models import EmailStatus, JobStatus, utcnow
from delivery_server.ports import Store
from delivery_server.settings import Settings, load_settings
from tests.integration.harness import (
    FROM_ADDRESS,
    STATEMENT,
    RunningServer,
    customer,
    prepared_store,
    wait_for_job,
    wait_until,
)
from tests.support.cli_runner import Cli

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "delivery_server" / "examples" / "templates"


def embedded(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'delivery.db'}",
        "outbox_dir": tmp_path / "outbox",
        "http_port": 0,
        "poll_interval": 0.05,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with prepared_store(embedded(tmp_path)) as store:
        await store.add_template(STATEMENT)
        yield store


async def email_rows(settings: Settings, job_id: int) -> list[sa.RowMapping]:
    engine = create_engine(settings.database_url.get_secret_value())
    try:
        async with engine.connect() as conn:
            query = sa.select(email_table).where(email_table.c.job_id == job_id)
            return list((await conn.execute(query)).mappings())
    finally:
        await engine.dispose()


async def test_emails_go_out_until_the_deadline_and_expire_after_it(
    tmp_path: Path, store: Store
) -> None:
    # Two emails a second for twenty emails: the deadline comes while most still wait
    # for the send rate (the pipeline's check) or have not been claimed (the claim's and
    # the settler's).
    settings = embedded(tmp_path, max_send_rate=2.0)
    job = await store.create_job(
        "deadline", STATEMENT.name, FROM_ADDRESS, send_by=utcnow() + timedelta(seconds=3)
    )
    await store.add_emails(job.id, [customer(n) for n in range(20)])
    await store.set_job_status(job.id, JobStatus.PROCESSING, [JobStatus.DRAFT])
    async with RunningServer(settings):
        finished = await wait_for_job(store, job.id, timeout=30)
    assert finished.status is JobStatus.COMPLETED  # an expired email is no failure

    rows = await email_rows(settings, job.id)
    sent = [row for row in rows if row["status"] == EmailStatus.SENT]
    expired = [row for row in rows if row["status"] == EmailStatus.EXPIRED]
    assert len(sent) + len(expired) == 20
    assert sent, "the first emails went out before the deadline"
    assert expired, "the deadline came before the send rate let all of them out"
    assert finished.send_by is not None
    assert all(row["sent_at"] <= finished.send_by for row in sent)
    assert all(row["attempts"] == 0 for row in expired)  # not an attempt
    assert len(list((tmp_path / "outbox").glob(f"{job.id}-*.eml"))) == len(sent)
    summary = await store.job_summary(job.id)
    assert summary.counts[EmailStatus.EXPIRED] == len(expired)


async def test_a_job_resumed_after_its_deadline_sends_nothing_and_completes(
    tmp_path: Path, store: Store
) -> None:
    send_by = utcnow() + timedelta(milliseconds=200)
    job = await store.create_job("late", STATEMENT.name, FROM_ADDRESS, send_by=send_by)
    await store.add_emails(job.id, [customer(1), customer(2)])
    await wait_until(lambda: utcnow() > send_by, timeout=10, what="the deadline")
    await store.set_job_status(job.id, JobStatus.PROCESSING, [JobStatus.DRAFT])
    async with RunningServer(embedded(tmp_path)):
        assert (await wait_for_job(store, job.id, timeout=30)).status is JobStatus.COMPLETED
    assert (await store.job_summary(job.id)).counts[EmailStatus.EXPIRED] == 2
    assert list((tmp_path / "outbox").glob("*.eml")) == []


# -- the command line ---------------------------------------------------------------------


@pytest.fixture
def database(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> str:
    monkeypatch.setenv("DELIVERY_DATABASE_URL", sqlite_url)
    assert cli("db", "upgrade").code == 0
    assert cli("templates", "push", str(TEMPLATES)).code == 0
    return sqlite_url


def recipients(tmp_path: Path) -> Path:
    path = tmp_path / "r.csv"
    path.write_text(
        "email,name,account,period,balance,currency\n"
        "ann@example.com,Ann,DE0012345678,2024,1.00,EUR\n",
        encoding="utf-8",
    )
    return path


def create(cli: Cli, tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    result = cli("jobs", "create", "--template", "statement", "--from", FROM_ADDRESS,
                 "--recipients", str(recipients(tmp_path)), *extra)  # fmt: skip
    return result.code, result.out, result.err


def test_a_deadline_in_the_past_is_refused_and_nothing_is_created(
    database: str, cli: Cli, tmp_path: Path
) -> None:
    code, _, err = create(cli, tmp_path, "--send-by", "2020-01-31T08:00:00+01:00")
    assert code == 2
    assert err == "error: --send-by 2020-01-31 07:00:00 UTC is in the past\n"
    soon, later = (utcnow() + timedelta(hours=h) for h in (1, 2))
    code, _, err = create(
        cli, tmp_path, "--send-by", soon.isoformat(), "--schedule-at", later.isoformat()
    )
    assert (code, err) == (2, "error: --send-by must be later than --schedule-at\n")
    code, _, err = create(cli, tmp_path, "--send-by", "tomorrow")
    assert code == 2
    assert "--send-by" in err
    assert cli("jobs", "list", "--json").json() == []


def test_show_gives_the_deadline_and_how_many_expired(
    database: str, cli: Cli, tmp_path: Path
) -> None:
    send_by = (utcnow() + timedelta(days=1)).replace(microsecond=0)
    code, out, err = create(cli, tmp_path, "--send-by", send_by.isoformat() + "+00:00")
    assert code == 0, err
    assert f"not after {send_by:%Y-%m-%d %H:%M:%S} UTC" in out
    shown = cli("jobs", "show", "1", "--json").json()
    assert shown["job"]["send_by"] == send_by.isoformat() + "Z"
    assert shown["counts"]["expired"] == 0
    table = cli("jobs", "show", "1")
    assert table.code == 0
    assert f"{send_by:%Y-%m-%d %H:%M:%S} UTC (0 expired)" in table.out
