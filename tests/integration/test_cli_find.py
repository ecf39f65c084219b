"""Finding things: ``jobs find ADDR`` (on SQLite and MariaDB), ``jobs export JOB`` as CSV,
and ``jobs show``'s failures grouped by error class."""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from delivery_server.adapters.store_sql import SqlStore, upgrade_schema
from delivery_server.email_records import EXPORT_COLUMNS
from delivery_server.models import EmailStatus, NewEmail
from tests.support.cli_runner import Cli

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "delivery_server" / "examples" / "templates"
FROM = "Example Bank <statements@bank.example>"


@pytest.fixture
def database(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> Path:
    monkeypatch.setenv("DELIVERY_DATABASE_URL", sqlite_url)
    assert cli("db", "upgrade").code == 0
    assert cli("templates", "push", str(TEMPLATES)).code == 0
    return Path(sqlite_url.removeprefix("sqlite:///"))


def make_job(cli: Cli, tmp_path: Path, *addresses: str) -> int:
    file = tmp_path / f"r{len(list(tmp_path.iterdir()))}.csv"
    file.write_text("email,name\n" + "".join(f"{a},X\n" for a in addresses))
    result = cli("jobs", "create", "--template", "statement", "--from", FROM,
                 "--recipients", str(file), "--draft", "--json")  # fmt: skip
    assert result.code == 0, result.err
    job_id: int = result.json()["job"]["id"]
    return job_id


def settle(database: Path, *rows: tuple[int, str, str | None]) -> None:
    """Give emails a status and a last error, as the pipeline would have."""
    with sqlite3.connect(database) as conn:
        conn.executemany(
            "UPDATE delivery_email SET status = ?, last_error = ? WHERE id = ?",
            [(status, error, email_id) for email_id, status, error in rows],
        )


def test_find_lists_the_emails_of_an_address_across_jobs_in_any_case(
    database: Path, tmp_path: Path, cli: Cli
) -> None:
    first = make_job(cli, tmp_path, "Ann.Smith@Example.com", "bob@example.com")
    second = make_job(cli, tmp_path, "ann.smith@example.com")

    found = cli("jobs", "find", "  ANN.SMITH@example.COM ", "--json")
    table = cli("jobs", "find", "ann.smith@example.com")
    nobody = cli("jobs", "find", "nobody@example.com")

    assert found.code == 0, found.err
    assert [(e["job_id"], e["status"]) for e in found.json()] == [
        (second, "pending"),
        (first, "pending"),
    ]
    assert table.code == 0
    assert "2 emails to this address" in table.out
    assert "ann.smith" not in table.out.lower()  # the table never prints the address
    assert nobody.code == 0
    assert "no email to it" in nobody.out


def test_find_refuses_something_that_is_not_an_address(database: Path, cli: Cli) -> None:
    result = cli("jobs", "find", "ann")
    assert result.code == 2
    assert "not an email address" in result.err


@pytest.fixture
async def mariadb_store(mariadb_url: str) -> AsyncIterator[SqlStore]:
    await upgrade_schema(mariadb_url)
    store = await SqlStore.connect(mariadb_url)
    yield store
    await store.close()


async def test_find_on_mariadb_uses_exact_normalised_matches(mariadb_store: SqlStore) -> None:
    store = mariadb_store
    job = await store.create_job("j", "statement", "s@bank.example")
    # The emails' collation takes "jäne" for "jane": the lookup must not.
    await store.add_emails(
        job.id, [NewEmail("Jane@Example.com"), NewEmail("jäne@example.com"), NewEmail("x@y.z")]
    )

    found = await store.emails_to("JANE@example.com", 10)
    limited = await store.emails_to("jane@example.com", 1)

    assert [f.email.to_address for f in found] == ["Jane@Example.com"]
    assert (found[0].job_name, found[0].job_status) == ("j", job.status)
    assert len(limited) == 1


def test_export_streams_csv_with_a_status_filter_and_formula_guard(
    database: Path, tmp_path: Path, cli: Cli
) -> None:
    job_id = make_job(cli, tmp_path, "ann@example.com", "bob@example.com", "cid@example.com")
    with sqlite3.connect(database) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM delivery_email ORDER BY id")]
    settle(database, (ids[1], "failed", '=HYPERLINK("x")'), (ids[2], "failed", "550 no"))

    everything = cli("jobs", "export", str(job_id))
    failed = cli("jobs", "export", str(job_id), "--status", "failed")
    missing = cli("jobs", "export", "999")
    bad_status = cli("jobs", "export", str(job_id), "--status", "lost")

    assert everything.code == 0, everything.err
    rows = list(csv.DictReader(io.StringIO(everything.out)))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert [int(r["email_id"]) for r in rows] == ids
    assert rows[0]["to_address"] == "ann@example.com"
    assert rows[0]["created_at"].endswith("Z")
    failed_rows = list(csv.DictReader(io.StringIO(failed.out)))
    assert [r["last_error"] for r in failed_rows] == ['\'=HYPERLINK("x")', "550 no"]
    assert missing.code == 1
    assert "job 999 does not exist" in missing.err
    assert bad_status.code == 2


def test_export_pages_through_a_job_larger_than_a_page(
    database: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import delivery_server.cli.jobs_find as jobs_find

    monkeypatch.setattr(jobs_find, "EXPORT_PAGE", 7)
    job_id = make_job(cli, tmp_path, *(f"c{i}@example.com" for i in range(30)))

    result = cli("jobs", "export", str(job_id))

    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert [r["to_address"] for r in rows] == [f"c{i}@example.com" for i in range(30)]


def test_show_groups_failures_by_error_class(database: Path, tmp_path: Path, cli: Cli) -> None:
    job_id = make_job(cli, tmp_path, *(f"c{i}@example.com" for i in range(6)))
    with sqlite3.connect(database) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM delivery_email ORDER BY id")]
    settle(
        database,
        (ids[0], "failed", "PermanentError: SMTP 550 <c0@example.com>: no such user"),
        (ids[1], "failed", "PermanentError: SMTP 550 <c1@example.com>: no such user"),
        (ids[2], "failed", "PermanentError: SMTP 550 <c2@example.com>: no such user"),
        (ids[3], "unknown", "lease expired while sending"),
        (ids[4], "sent", "RetryableError: an old retry's error"),  # sent: not a failure
    )

    summary = cli("jobs", "show", str(job_id), "--json").json()
    text = cli("jobs", "show", str(job_id))

    assert summary["failures_by_error"] == [
        {"error": "PermanentError: SMTP 550 <address>: no such user", "count": 3,
         "example_email_id": ids[2]},
        {"error": "lease expired while sending", "count": 1, "example_email_id": ids[3]},
    ]  # fmt: skip
    assert "failures by error" in text.out
    assert "@" not in text.out.replace("statements@bank.example", "")
    assert EmailStatus.FAILED.value in summary["counts"]
