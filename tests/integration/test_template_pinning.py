"""Template pinning end to end: an embedded server (SQLite, the in-process queue, the
outbox) renders a job with the version it was pinned to when it started, whatever was
pushed since, and each email records that version.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from delivery_server.adapters.store_sql.engine import create_engine
from delivery_server.adapters.store_sql.schema import email as email_table
from delivery_server.models import JobStatus, Template, utcnow
from delivery_server.ports import Store
from delivery_server.settings import Settings, load_settings
from tests.integration.harness import (
    FROM_ADDRESS,
    RunningServer,
    customer,
    prepared_store,
    wait_for_job,
)
from tests.support.cli_runner import Cli, Result

pytestmark = pytest.mark.timeout(60)


def embedded(tmp_path: Path) -> Settings:
    return load_settings(
        database_url=f"sqlite:///{tmp_path / 'delivery.db'}",
        outbox_dir=tmp_path / "outbox",
        http_port=0,
        poll_interval=0.05,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with prepared_store(embedded(tmp_path)) as store:
        yield store


def subjects(outbox: Path, job_id: int) -> dict[str, str]:
    """Subject by recipient of each ``.eml`` the job wrote."""
    found = {}
    for path in sorted(outbox.glob(f"{job_id}-*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found[str(message["To"])] = str(message["Subject"])
    return found


async def recorded_versions(settings: Settings, job_id: int) -> dict[str, int | None]:
    engine = create_engine(settings.database_url.get_secret_value())
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.select(email_table.c.to_address, email_table.c.template_version).where(
                    email_table.c.job_id == job_id
                )
            )
            return {row.to_address: row.template_version for row in rows}
    finally:
        await engine.dispose()


async def push(store: Store, locale: str, subject: str) -> int:
    stored = await store.add_template(Template("notice", locale, 0, subject, "Hello {{ name }}"))
    return stored.version


async def test_a_push_after_the_start_changes_nothing_of_the_rest_of_the_job(
    tmp_path: Path, store: Store
) -> None:
    settings = embedded(tmp_path)
    assert await push(store, "en", "english one") == 1
    assert await push(store, "de", "deutsch zwei") == 2
    job = await store.create_job("notices", "notice", FROM_ADDRESS)
    await store.add_emails(
        job.id, [customer(1), customer(2, locale="de"), customer(3, locale="fr")]
    )
    await store.set_job_status(job.id, JobStatus.PROCESSING, [JobStatus.DRAFT])
    # A publisher started the job (and pinned it), then went away: what a server
    # restarted mid-run finds.
    (started,) = await store.due_jobs(utcnow())
    assert started.template_version == 2

    await push(store, "en", "english three")
    await push(store, "de", "deutsch vier")
    await push(store, "fr", "français cinq")
    async with RunningServer(settings):
        assert (await wait_for_job(store, job.id, timeout=30)).status is JobStatus.COMPLETED

    assert subjects(tmp_path / "outbox", job.id) == {
        "c1@customers.example": "english one",
        "c2@customers.example": "deutsch zwei",
        "c3@customers.example": "english one",  # no French version when it started
    }
    assert await recorded_versions(settings, job.id) == {
        "c1@customers.example": 1,
        "c2@customers.example": 2,
        "c3@customers.example": 1,
    }
    # A job started now takes the latest of each locale.
    later = await store.create_job("notices", "notice", FROM_ADDRESS)
    await store.add_emails(later.id, [customer(4, locale="fr")])
    await store.set_job_status(later.id, JobStatus.PROCESSING, [JobStatus.DRAFT])
    async with RunningServer(settings):
        assert (await wait_for_job(store, later.id, timeout=30)).template_version == 5
    assert subjects(tmp_path / "outbox", later.id) == {"c4@customers.example": "français cinq"}


# -- templates render --version -----------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "delivery_server" / "examples" / "templates"
VARIABLES = json.dumps(
    {"name": "Ann", "account": "DE0012345678", "period": "2024", "balance": "1", "currency": "EUR"}
)


@pytest.fixture
def pushed_twice(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:
    """The example templates pushed twice: de 1, en 2, fr 3, then de 4, en 5, fr 6."""
    monkeypatch.setenv("DELIVERY_DATABASE_URL", sqlite_url)
    assert cli("db", "upgrade").code == 0
    assert "statement (en): version 2" in cli("templates", "push", str(EXAMPLES)).out
    assert "statement (en): version 5" in cli("templates", "push", str(EXAMPLES)).out


def render(cli: Cli, *args: str) -> Result:
    return cli("templates", "render", "statement", "--vars", VARIABLES, *args)


def test_render_a_version_as_a_job_pinned_to_it_would(pushed_twice: None, cli: Cli) -> None:
    exact = render(cli, "--version", "2")
    assert exact.code == 0, exact.err
    assert "--- text (statement en v2) ---" in exact.out
    assert exact.err == ""

    german = render(cli, "--version", "4")  # a German push: English as of then is v2
    assert german.code == 0, german.err
    assert "--- text (statement en v2) ---" in german.out
    assert german.err == "version 4 is not a version of en: v2 is the newest below it\n"
    assert "(statement de v4)" in render(cli, "--locale", "de", "--version", "5").out
    assert "(statement en v5)" in render(cli).out  # without --version: the latest


def test_render_a_version_that_is_not_there(pushed_twice: None, cli: Cli) -> None:
    early = render(cli, "--version", "1")
    assert (early.code, early.err) == (
        1,
        "error: template 'statement' (en) has no version at or below 1 (its latest is 5)\n",
    )
    locale = render(cli, "--locale", "it", "--version", "3")
    assert locale.code == 1
    assert locale.err == "error: template 'statement' has no locale 'it' (it has: de, en, fr)\n"
    zero = render(cli, "--version", "0")
    assert zero.code == 2
    assert "--version" in zero.err
