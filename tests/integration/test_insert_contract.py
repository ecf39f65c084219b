"""The README's insert contract: an upstream system registers a job with plain SQL
(docs/examples/upstream-insert.sql, run here as is) and a server sends it."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from pathlib import Path

import aiomysql
import pytest
from sqlalchemy.engine import make_url

from delivery_server.models import EmailStatus, JobStatus
from delivery_server.settings import load_settings
from tests.integration.harness import STATEMENT, RunningServer, prepared_store, wait_for_job

SCRIPT = Path(__file__).parents[2] / "docs" / "examples" / "upstream-insert.sql"

pytestmark = pytest.mark.timeout(120)


def statements(script: str) -> list[str]:
    """The script's statements: comments dropped, split on the ``;`` that ends a line."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    text = "\n".join(lines)
    parts = (part.strip().rstrip(";").strip() for part in text.split(";\n"))
    return [part for part in parts if part]


async def run_script(database_url: str, script: str) -> None:
    """Run the script on one connection, as the ``mysql`` client would (its user variable
    ``@job_id`` lives in the session)."""
    url = make_url(database_url)
    conn = await aiomysql.connect(
        host=url.host, port=url.port or 3306, user=url.username, db=url.database
    )
    try:
        async with conn.cursor() as cursor:
            for statement in statements(script):
                await cursor.execute(statement)
        await conn.commit()
    finally:
        conn.close()


async def test_the_example_script_fills_the_defaults_and_its_job_is_sent(
    mariadb_url: str, tmp_path: Path
) -> None:
    (tmp_path / "files" / "statements").mkdir(parents=True)
    (tmp_path / "files" / "statements" / "grace.pdf").write_bytes(b"%PDF-1.4 Grace\n")
    outbox = tmp_path / "outbox"
    settings = load_settings(
        database_url=mariadb_url,
        outbox_dir=outbox,
        attachments_dir=tmp_path / "files",
        http_port=0,
        poll_interval=0.1,
        shutdown_grace=2.0,
        log_level="warning",
    )
    async with prepared_store(settings) as store:
        await store.add_template(STATEMENT)
        before = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=5)

        await run_script(mariadb_url, SCRIPT.read_text())

        [job] = await store.jobs()
        assert job.status is JobStatus.PROCESSING  # the script's last statement
        assert job.name == "November statements"
        # The database's defaults: UTC times (not the session's zone), zero counters.
        assert job.created_at is not None
        assert before <= job.created_at <= before + dt.timedelta(minutes=1)
        assert (job.total_count, job.sent_count, job.failed_count) == (0, 0, 0)
        summary = await store.job_summary(job.id)
        assert summary.counts[EmailStatus.PENDING] == 3

        async with RunningServer(settings):
            done = await wait_for_job(store, job.id, timeout=60)

    assert done.status is JobStatus.COMPLETED
    assert (done.total_count, done.sent_count, done.failed_count) == (3, 3, 0)
    written = sorted(outbox.rglob("*.eml"))
    assert len(written) == 3
    messages = [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default) for path in written
    ]
    subjects = sorted(str(message["Subject"]) for message in messages)
    assert subjects == [
        "Statement November for Ada",
        "Statement November for Alan",
        "Statement November for Grace",
    ]
    attached = [part.get_filename() for message in messages for part in message.iter_attachments()]
    assert attached == ["statement.pdf"]


def test_statements_are_split_as_the_mysql_client_would() -> None:
    script = "-- a comment; not a statement\nSELECT 1;\nSELECT\n  2;\n"
    assert statements(script) == ["SELECT 1", "SELECT\n  2"]
