"""``jobs check`` and ``jobs create --check`` against a real database and real files:
exit codes, the report, the digests stored, and that nothing is created or sent."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from tests.support.cli_runner import Cli

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "delivery_server" / "examples" / "templates"
PDF = b"%PDF-1.4 a statement"
GOOD = {"name": "Ann", "account": "DE0012345678", "period": "2024", "balance": "1.00",
        "currency": "EUR"}  # fmt: skip
FROM = "Example Bank <statements@bank.example>"


@pytest.fixture
def database(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> Path:
    """An upgraded SQLite database with the example templates, and an attachments
    directory holding one PDF; returns the database file."""
    monkeypatch.setenv("DELIVERY_DATABASE_URL", sqlite_url)
    attachments = tmp_path / "attachments"
    attachments.mkdir()
    (attachments / "ann.pdf").write_bytes(PDF)
    monkeypatch.setenv("DELIVERY_ATTACHMENTS_DIR", str(attachments))
    assert cli("db", "upgrade").code == 0
    assert cli("templates", "push", str(TEMPLATES)).code == 0
    return Path(sqlite_url.removeprefix("sqlite:///"))


def recipients(path: Path, *rows: dict[str, object] | str) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pdf(uri: str = "file:ann.pdf") -> list[dict[str, str]]:
    return [{"uri": uri, "filename": "statement.pdf", "content_type": "application/pdf"}]


def every_kind_of_bad_row(tmp_path: Path) -> Path:
    return recipients(
        tmp_path / "bad.jsonl",
        {"email": "ann@example.com", **GOOD, "attachments": pdf()},
        {"email": "not an address", **GOOD},
        {"email": "cid@example.com", "account": "DE0012345678", "period": "2024"},
        "{not json",
        {"email": "dan@example.com", **GOOD, "attachments": pdf("file:missing.pdf")},
        {"email": "eve@example.com", **GOOD, "attachments": pdf("file:../secret.pdf")},
        {"email": "fay@example.com", **GOOD, "attachments": pdf("s3://not-allowed/x.pdf")},
    )


def test_a_file_with_every_kind_of_bad_row_is_reported_by_line_and_exits_1(
    database: Path, tmp_path: Path, cli: Cli
) -> None:
    file = every_kind_of_bad_row(tmp_path)

    result = cli("jobs", "check", "--recipients", str(file), "--template", "statement", "--json")

    assert result.code == 1, result.err
    report = result.json()
    assert (report["ok"], report["checked"], report["failing"]) == (False, 7, 6)
    assert report["problem_counts"] == {"address": 1, "attachment": 3, "row": 1, "variables": 1}
    by_line = {p["line"]: (p["kind"], p["reason"]) for p in report["problems"]}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7]
    assert by_line[3] == ("variables", "missing variables: balance, currency, name")
    assert by_line[5] == ("attachment", "attachment 1: file attachment not found")
    assert by_line[7][0] == "attachment"
    assert report["attachments"] == {"read": 1, "bytes": len(PDF), "digests_recorded": 0}
    assert "example.com" not in result.out
    assert "would fail" in result.err


def test_a_good_file_passes_with_exit_0(database: Path, tmp_path: Path, cli: Cli) -> None:
    file = recipients(tmp_path / "good.jsonl", {"email": "ann@example.com", **GOOD})

    result = cli("jobs", "check", "--recipients", str(file), "--template", "statement")

    assert result.code == 0, result.err
    assert "1 row checked; nothing would fail" in result.out


def test_create_check_creates_nothing_when_the_check_fails(
    database: Path, tmp_path: Path, cli: Cli
) -> None:
    bad = every_kind_of_bad_row(tmp_path)
    good = recipients(tmp_path / "good.jsonl", {"email": "ann@example.com", **GOOD})
    create = ("jobs", "create", "--template", "statement", "--from", FROM, "--check")

    refused = cli(*create, "--recipients", str(bad))
    created = cli(*create, "--recipients", str(good), "--json")

    assert refused.code == 1
    assert "nothing was created" in refused.err
    assert created.code == 0, created.err
    assert "nothing would fail" in created.err
    assert [job["id"] for job in cli("jobs", "list", "--json").json()] == [
        created.json()["job"]["id"]
    ]


def test_a_job_is_checked_by_email_id_and_its_digests_are_stored(
    database: Path, tmp_path: Path, cli: Cli
) -> None:
    file = recipients(
        tmp_path / "job.jsonl",
        {"email": "ann@example.com", **GOOD, "attachments": pdf()},
        {"email": "bob@example.com", **GOOD, "attachments": pdf("file:missing.pdf")},
    )
    created = cli("jobs", "create", "--template", "statement", "--from", FROM,
                  "--recipients", str(file), "--draft", "--json")  # fmt: skip
    job_id = created.json()["job"]["id"]
    with sqlite3.connect(database) as conn:  # an upstream system's broken row
        conn.execute(
            "INSERT INTO delivery_email (job_id, to_address, variables) VALUES (?, ?, ?)",
            (job_id, "cid@example.com", "{broken"),
        )
        ids = [row[0] for row in conn.execute("SELECT id FROM delivery_email ORDER BY id")]

    result = cli("jobs", "check", str(job_id), "--json")

    assert result.code == 1, result.err
    report = result.json()
    assert [(p["email_id"], p["kind"]) for p in report["problems"]] == [
        (ids[1], "attachment"),
        (ids[2], "row"),
    ]
    assert report["attachments"]["digests_recorded"] == 1
    with sqlite3.connect(database) as conn:
        digests = conn.execute(
            "SELECT job_id, email_id, number, size_bytes, sha256 FROM delivery_attachment_digest"
        ).fetchall()
        statuses = {row[0] for row in conn.execute("SELECT status FROM delivery_email")}
    assert digests == [(job_id, ids[0], 1, len(PDF), hashlib.sha256(PDF).hexdigest())]
    assert statuses == {"pending"}  # nothing was sent or changed


@pytest.mark.parametrize(
    "args",
    [
        ("jobs", "check"),
        ("jobs", "check", "1", "--recipients", "x.csv", "--template", "t"),
        ("jobs", "check", "--recipients", "x.csv"),
        ("jobs", "check", "1", "--template", "statement"),
    ],
)
def test_bad_usage_exits_2_with_one_line(database: Path, cli: Cli, args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.code == 2
    assert result.err.count("\n") == 1


def test_checking_a_missing_job_or_file_exits_1(database: Path, tmp_path: Path, cli: Cli) -> None:
    missing_job = cli("jobs", "check", "999")
    missing_file = cli("jobs", "check", "--recipients", str(tmp_path / "none.csv"),
                       "--template", "statement")  # fmt: skip
    assert (missing_job.code, missing_file.code) == (1, 1)
    assert "job 999 does not exist" in missing_job.err
    assert "cannot read" in missing_file.err
