"""``delivery-server suppressions ...`` against a real database, and what a listed address
does to a job: its email ends ``suppressed`` when a consumer claims it.

Commands run in-process through ``main`` (as in ``test_cli.py``); the job runs on an
embedded server (SQLite or MariaDB, the in-process queue, the outbox).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from delivery_server.models import EmailStatus, JobStatus, Suppression, SuppressionReason
from delivery_server.settings import load_settings
from tests.integration.harness import RunningServer, prepared_store, wait_for_job
from tests.support.cli_runner import Cli

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "delivery_server" / "examples" / "templates"


@pytest.fixture
def database(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> str:
    """An upgraded SQLite database that every command of the test uses."""
    monkeypatch.setenv("DELIVERY_DATABASE_URL", sqlite_url)
    assert cli("db", "upgrade").code == 0
    return sqlite_url


def listed(cli: Cli) -> dict[str, dict[str, Any]]:
    result = cli("suppressions", "list", "--json")
    assert result.code == 0, result.err
    return {entry["address"]: entry for entry in result.json()}


def in_a_day() -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat(timespec="seconds")


# -- add, list, remove ------------------------------------------------------------------


def test_add_list_and_remove(database: str, cli: Cli) -> None:
    assert cli("suppressions", "list").out.startswith("suppressions: none")
    added = cli("suppressions", "add", "Ann@Example.COM", " bob@example.com ")
    assert (added.code, added.out) == (0, "2 address(es) suppressed (manual)\n"), added.err
    table = cli("suppressions", "list").out
    assert "ann@example.com" in table
    assert "never" in table
    entries = listed(cli)
    assert set(entries) == {"ann@example.com", "bob@example.com"}
    assert entries["ann@example.com"]["reason"] == "manual"
    assert entries["ann@example.com"]["expires_at"] is None
    assert entries["ann@example.com"]["created_at"].endswith("Z")

    again = cli("suppressions", "add", "ANN@example.com", "--json")
    assert again.json() == {"added": 0}  # listed already, forever

    removed = cli("suppressions", "remove", "ann@EXAMPLE.com", "zed@example.com")
    assert (removed.code, removed.out) == (0, "1 address(es) removed from the list\n")
    assert cli("suppressions", "remove", "bob@example.com", "--json").json() == {"removed": 1}
    assert listed(cli) == {}


def test_reason_expiry_and_note_are_kept_and_never_shortened(database: str, cli: Cli) -> None:
    expires = in_a_day()
    result = cli("suppressions", "add", "c@example.com", "--reason", "complaint",
                 "--expires", expires, "--note", "ticket 4711", "--json")  # fmt: skip
    assert result.json() == {"added": 1}, result.err
    entry = listed(cli)["c@example.com"]
    assert (entry["reason"], entry["note"]) == ("complaint", "ticket 4711")
    wanted = dt.datetime.fromisoformat(expires).astimezone(dt.UTC).replace(tzinfo=None)
    assert dt.datetime.fromisoformat(entry["expires_at"].removesuffix("Z")) == wanted

    sooner = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert cli("suppressions", "add", "c@example.com", "--expires", sooner, "--json").json() == {
        "added": 0
    }
    assert listed(cli)["c@example.com"]["reason"] == "complaint"
    # Forever outlasts any expiry: the entry is lengthened and takes the new reason.
    assert cli("suppressions", "add", "c@example.com", "--json").json() == {"added": 1}
    entry = listed(cli)["c@example.com"]
    assert (entry["reason"], entry["expires_at"]) == ("manual", None)


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("--reason", "bogus"), "--reason: must be one of hard_bounce, complaint, unsubscribe"),
        (("--expires", "2020-01-01T00:00:00Z"), "--expires: must be in the future"),
        (("--expires", "next tuesday"), "--expires: 'next tuesday' is not an ISO 8601 time"),
    ],
)
def test_a_bad_reason_or_expiry_exits_2_naming_the_option(
    database: str, cli: Cli, args: tuple[str, ...], complaint: str
) -> None:
    for command in ("add", "import"):
        target = "x@example.com" if command == "add" else "unread.txt"
        result = cli("suppressions", command, target, *args)
        assert result.code == 2, command
        assert complaint in result.err, result.err
    assert listed(cli) == {}


def test_a_bad_address_exits_2_naming_its_position_not_its_text(database: str, cli: Cli) -> None:
    result = cli("suppressions", "add", "ok@example.com", "secretname@@example.com")
    assert result.code == 2
    assert result.err.startswith("error: address 2: invalid recipient address")
    assert "secretname" not in result.err
    assert listed(cli) == {}  # nothing is added when one argument is bad
    assert cli("suppressions", "remove", "not-an-address").code == 2


# -- import -----------------------------------------------------------------------------


def test_import_a_list_of_plain_lines(database: str, cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text(
        "Ann@Example.com\n"
        "\n"
        "# exported from the old mailer\n"
        "secretname-without-at\n"
        "  bob@example.com  \r\n"
        "secret2@@example.com\n",
        encoding="utf-8",
    )
    result = cli("suppressions", "import", str(path), "--reason", "hard_bounce")
    assert result.code == 0, result.err
    assert result.out.startswith(f"2 address(es) suppressed (hard_bounce) from {path}")
    assert "2 line(s) skipped" in result.out
    assert "  line 4: invalid recipient address" in result.out
    assert "  line 6: invalid recipient address" in result.out
    assert "secret" not in result.out + result.err
    entries = listed(cli)
    assert set(entries) == {"ann@example.com", "bob@example.com"}
    assert {entry["reason"] for entry in entries.values()} == {"hard_bounce"}

    again = cli("suppressions", "import", str(path), "--json")
    assert again.json()["added"] == 0  # hard bounces listed forever already
    assert [bad["line"] for bad in again.json()["invalid"]] == [4, 6]
    assert "secret" not in again.out


def test_import_a_csv_export_with_an_email_column(database: str, cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    # As a spreadsheet saves it: a byte order mark, CRLF, a quoted cell over two lines.
    path.write_bytes(
        (
            "\ufeffEMAIL,name,comment\r\n"
            "ann@example.com,Ann,\r\n"
            'bob@example.com,Bob,"asked twice,\r\nby phone"\r\n'
            "secretname@,Sec,bad\r\n"
            ",Cid,no address\r\n"
            '"dan@example.com",Dan,\r\n'
        ).encode()
    )
    result = cli("suppressions", "import", str(path), "--json", "--expires", in_a_day())
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["added"] == 3
    assert [bad["line"] for bad in summary["invalid"]] == [5]
    assert "secretname" not in result.out
    entries = listed(cli)
    assert set(entries) == {"ann@example.com", "bob@example.com", "dan@example.com"}
    assert all(entry["expires_at"] is not None for entry in entries.values())


def test_import_refuses_a_csv_without_an_address_column_or_a_missing_file(
    database: str, cli: Cli, tmp_path: Path
) -> None:
    path = tmp_path / "people.csv"
    path.write_text("name,phone\nAnn,123\n", encoding="utf-8")
    result = cli("suppressions", "import", str(path))
    assert result.code == 1
    assert "no email (or address) column" in result.err
    missing = cli("suppressions", "import", str(tmp_path / "gone.txt"))
    assert missing.code == 1
    assert "cannot read" in missing.err
    assert listed(cli) == {}


# -- a listed address at claim time -----------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_an_email_to_a_suppressed_address_ends_suppressed(
    backend: str,
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    database_url = request.getfixturevalue(f"{backend}_url")
    monkeypatch.setenv("DELIVERY_DATABASE_URL", database_url)
    assert cli("db", "upgrade").code == 0
    assert cli("templates", "push", str(TEMPLATES)).code == 0
    # Listed in another letter case than the job will use.
    assert cli("suppressions", "add", "Ann.Lee@Example.COM").code == 0
    recipients = tmp_path / "recipients.csv"
    recipients.write_text(
        "email,name,account,period,balance,currency\n"
        "ann.lee@example.com,Ann,DE0012345678,2024,1.00,EUR\n"
        "cid@example.com,Cid,DE0087654321,2024,2.00,EUR\n"
        "old@example.com,Old,DE0011111111,2024,3.00,EUR\n",
        encoding="utf-8",
    )
    created = cli("jobs", "create", "--template", "statement", "--from",
                  "Example Bank <statements@bank.example>", "--recipients", str(recipients),
                  "--json")  # fmt: skip
    assert created.code == 0, created.err
    job_id = created.json()["job"]["id"]
    outbox = tmp_path / "outbox"
    asyncio.run(_run_job(database_url, outbox, job_id))

    summary = cli("jobs", "show", str(job_id), "--json").json()
    assert summary["job"]["status"] == "completed"
    counts = {status: n for status, n in summary["counts"].items() if n}
    assert counts == {"sent": 2, "suppressed": 1}
    assert summary["job"]["failed_count"] == 0
    written = sorted(outbox.rglob("*.eml"))
    assert len(written) == 2
    assert not any(b"ann.lee@" in path.read_bytes().lower() for path in written)


async def _run_job(database_url: str, outbox: Path, job_id: int) -> None:
    """Run an embedded server until the job is done; an expired entry is listed first."""
    settings = load_settings(
        database_url=database_url,
        outbox_dir=outbox,
        http_port=0,
        poll_interval=0.1,
        shutdown_grace=2.0,
        log_level="warning",
    )
    async with prepared_store(settings) as store:
        # An entry that expired an hour ago no longer suppresses (the CLI refuses to add
        # one in the past, so the store adds it as time would have left it).
        expired = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=1)
        await store.add_suppressions(
            [Suppression("old@example.com", SuppressionReason.MANUAL, expires_at=expired)]
        )
        async with RunningServer(settings):
            job = await wait_for_job(store, job_id, timeout=60)
        assert job.status is JobStatus.COMPLETED
        summary = await store.job_summary(job_id)
        assert summary.counts[EmailStatus.SUPPRESSED] == 1
