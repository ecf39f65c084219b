"""The command line against a real database: exit codes, messages, and what gets written.

Most tests call ``main([...])`` in-process (fast); the ones about process-level behaviour
(exit codes, one-line errors, the environment) run ``python -m delivery_server``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli_runner import Cli, Result

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "delivery_server" / "examples" / "templates"
VARIABLES = {"name": "Ann", "account": "DE0012345678", "period": "2024", "balance": "1.00",
             "currency": "EUR"}  # fmt: skip


def command(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 60) -> Result:  # fmt: skip
    """Run the real command in a child process."""
    proc = subprocess.run(
        [sys.executable, "-m", "delivery_server", *args],
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def database(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> str:
    """An upgraded SQLite database that every command of the test uses."""
    monkeypatch.setenv("DELIVERY_DATABASE_URL", sqlite_url)
    assert cli("db", "upgrade").code == 0
    return sqlite_url


@pytest.fixture
def templates(database: str, cli: Cli) -> None:
    result = cli("templates", "push", str(TEMPLATES))
    assert result.code == 0, result.err


def write_csv(path: Path) -> Path:
    path.write_text(
        "email,name,account,period,balance,currency\n"
        'ann@example.com,Ann,DE0012345678,2024,"1,000.00",EUR\n'
        "not an address,Bob,DE01,2024,0,EUR\n"
        "\n"
        "cid@example.com,Cid,DE0087654321,2024,12.00,EUR\n",
        encoding="utf-8",
    )
    return path


def create(cli: Cli, recipients: Path, *extra: str) -> Result:
    return cli("jobs", "create", "--template", "statement", "--from",
               "Example Bank <statements@bank.example>", "--recipients", str(recipients),
               *extra)  # fmt: skip


def show(cli: Cli, job_id: int) -> dict[str, Any]:
    result = cli("jobs", "show", str(job_id), "--json")
    assert result.code == 0, result.err
    summary: dict[str, Any] = result.json()
    return summary


def job_count(cli: Cli) -> int:
    return len(cli("jobs", "list", "--json").json())


# -- database and settings --------------------------------------------------------------


def test_db_upgrade_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "delivery.db"
    env = {"DELIVERY_DATABASE_URL": f"sqlite:///{path}"}
    for _ in range(2):
        result = command("db", "upgrade", env=env)
        assert (result.code, result.out) == (0, "database schema is up to date\n"), result.err
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"delivery_template", "delivery_job", "delivery_email"} <= tables


def test_a_bad_setting_exits_2_with_one_line_naming_it(tmp_path: Path) -> None:
    result = command("jobs", "list", env={"DELIVERY_QUEUE": "bogus"})
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert "DELIVERY_QUEUE" in result.err
    assert "Traceback" not in result.err


def test_an_unknown_key_in_the_config_file_exits_2(tmp_path: Path, cli: Cli) -> None:
    config = tmp_path / "delivery.toml"
    config.write_text('queue = "local"\nqueu = "sqs"\n')
    result = cli("jobs", "list", "--config", str(config))
    assert result.code == 2
    assert "unknown setting 'queu'" in result.err


def test_config_file_before_or_after_the_command(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DELIVERY_DATABASE_URL", raising=False)
    config = tmp_path / "delivery.toml"
    config.write_text(f'database_url = "sqlite:///{tmp_path / "from-config.db"}"\n')
    assert cli("--config", str(config), "db", "upgrade").code == 0
    assert (tmp_path / "from-config.db").exists()
    assert cli("jobs", "list", "--config", str(config), "--json").json() == []


def test_usage_errors_exit_2(database: str, cli: Cli, tmp_path: Path) -> None:
    assert cli().code == 2
    assert cli("jobs", "restart-failed").code == 2
    assert cli("jobs", "show", "abc").code == 2
    result = create(cli, write_csv(tmp_path / "r.csv"), "--schedule-at", "next tuesday")
    assert result.code == 2
    assert "ISO 8601" in result.err
    bad_from = cli("jobs", "create", "--template", "statement", "--from", "bank",
                   "--recipients", str(tmp_path / "r.csv"))  # fmt: skip
    assert bad_from.code == 2
    assert "--from: invalid address" in bad_from.err


def test_run_with_a_local_queue_cannot_split_roles(database: str, cli: Cli) -> None:
    result = cli("run", "--role", "publisher")
    assert result.code == 2
    assert "DELIVERY_QUEUE" in result.err


# -- templates --------------------------------------------------------------------------


def test_templates_push_and_render(database: str, cli: Cli) -> None:
    pushed = cli("templates", "push", str(TEMPLATES))
    assert pushed.code == 0, pushed.err
    # Versions count per name across locales (a push in any locale comes after every
    # version a running job may be pinned to).
    assert "statement (de): version 1" in pushed.out
    assert "statement (en): version 5" in cli("templates", "push", str(TEMPLATES)).out
    listed = cli("templates", "list", "--json").json()
    assert {(t["locale"], t["version"]) for t in listed} == {("de", 4), ("en", 5), ("fr", 6)}

    result = cli("templates", "render", "statement", "--locale", "de", "--vars",
                 json.dumps(VARIABLES))  # fmt: skip
    assert result.code == 0, result.err
    assert result.out.startswith(
        "Subject: Ihr Kontoauszug 2024 für das Konto mit der Endung 5678\n"
    )
    assert "Guten Tag Ann," in result.out
    assert "<p>Guten Tag Ann,</p>" in result.out


def test_render_with_a_missing_variable_is_a_clear_error(database: str, cli: Cli) -> None:
    assert cli("templates", "push", str(TEMPLATES)).code == 0
    variables = {k: v for k, v in VARIABLES.items() if k != "period"}
    result = cli("templates", "render", "statement", "--vars", json.dumps(variables))
    assert (result.code, result.err) == (1, "error: template 'statement': 'period' is undefined\n")


def test_render_unknown_template_or_locale(database: str, cli: Cli) -> None:
    assert cli("templates", "push", str(TEMPLATES / "statement.en.toml")).code == 0
    missing = cli("templates", "render", "nope", "--vars", "{}")
    assert (missing.code, missing.err) == (1, "error: template 'nope' does not exist\n")
    locale = cli("templates", "render", "statement", "--locale", "it")
    assert locale.code == 1
    assert locale.err == "error: template 'statement' has no locale 'it' (it has: en)\n"


def test_push_refuses_a_syntax_error_with_file_and_line(
    database: str, cli: Cli, tmp_path: Path
) -> None:
    good = tmp_path / "welcome.en.toml"
    good.write_text('subject = "Hi {{ name }}"\ntext_body = "Hello"\n')
    bad = tmp_path / "welcome.de.toml"
    bad.write_text('subject = "Hallo"\ntext_body = """\nZeile eins\nZeile {{ zwei }\n"""\n')
    result = cli("templates", "push", str(tmp_path))
    assert result.code == 1
    assert result.err == (f"error: {bad}:4: template syntax error in text_body: unexpected '}}'\n")
    # All or nothing: the good file was not stored either.
    assert cli("templates", "list", "--json").json() == []


# -- jobs create ------------------------------------------------------------------------


def test_create_from_csv_reports_bad_rows_and_imports_the_rest(
    templates: None, cli: Cli, tmp_path: Path
) -> None:
    result = create(cli, write_csv(tmp_path / "r.csv"), "--json", "--name", "year end")
    assert result.code == 0, result.err
    report = result.json()
    assert report["imported"] == 2
    assert report["invalid_count"] == 1
    assert report["invalid"][0]["line"] == 3
    assert report["invalid"][0]["reason"].startswith("invalid recipient address")
    assert report["job"]["status"] == "processing"
    assert report["job"]["name"] == "year end"
    summary = show(cli, report["job"]["id"])
    assert summary["counts"]["pending"] == 2
    assert summary["job"]["total_count"] == 2


def test_create_human_output(templates: None, cli: Cli, tmp_path: Path) -> None:
    result = create(cli, write_csv(tmp_path / "r.csv"))
    assert result.code == 0, result.err
    assert result.err.startswith("line 3: invalid recipient address")
    assert result.out.splitlines() == [
        "job 1 (statement r.csv): 2 emails imported, 1 invalid row skipped; status processing",
        "follow it with: delivery-server jobs watch 1",
    ]


def test_create_from_jsonl_with_a_malformed_line(templates: None, cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(
        json.dumps({"email": "ann@example.com", **VARIABLES, "transactions": [
            {"date": "2024-01-02", "description": "Rent", "amount": "-900.00"}]}) + "\n"
        + '{"email": "bob@example.com", "name": "Bob",\n'
        + json.dumps({"email": "cid@example.com", "locale": "fr", **VARIABLES}) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    result = create(cli, path, "--json")
    assert result.code == 0, result.err
    report = result.json()
    assert report["imported"] == 2
    assert report["invalid"] == [
        {"line": 2, "reason": "invalid JSON: Expecting property name enclosed in double quotes "
                              "(column 44)"}
    ]  # fmt: skip


def test_strict_writes_nothing_when_a_row_is_invalid(
    templates: None, cli: Cli, tmp_path: Path
) -> None:
    result = create(cli, write_csv(tmp_path / "r.csv"), "--strict")
    assert result.code == 1
    assert "line 3: invalid recipient address" in result.err
    assert result.err.splitlines()[-1] == (
        f"error: {tmp_path / 'r.csv'}: 1 row invalid; --strict: nothing imported"
    )
    assert job_count(cli) == 0


def test_strict_imports_a_clean_file(templates: None, cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("email,name\nann@example.com,Ann\n")
    result = create(cli, path, "--strict", "--json")
    assert result.code == 0, result.err
    assert result.json()["imported"] == 1


def test_unknown_template_creates_no_job(database: str, cli: Cli, tmp_path: Path) -> None:
    result = create(cli, write_csv(tmp_path / "r.csv"))
    assert (result.code, result.err) == (1, "error: template 'statement' does not exist\n")
    assert job_count(cli) == 0


def test_a_file_without_an_email_column_creates_no_job(
    templates: None, cli: Cli, tmp_path: Path
) -> None:
    path = tmp_path / "r.csv"
    path.write_text("mail,name\nann@example.com,Ann\n")
    result = create(cli, path)
    assert result.code == 1
    assert "no 'email' column" in result.err
    assert job_count(cli) == 0


def test_draft_schedule_and_reply_to(templates: None, cli: Cli, tmp_path: Path) -> None:
    result = create(cli, write_csv(tmp_path / "r.csv"), "--draft", "--json",
                    "--schedule-at", "2030-01-01T10:00:00+02:00",
                    "--reply-to", "help@bank.example")  # fmt: skip
    job = result.json()["job"]
    assert job["status"] == "draft"
    assert job["scheduled_at"] == "2030-01-01T08:00:00Z"
    assert job["reply_to"] == "help@bank.example"
    naive = create(cli, write_csv(tmp_path / "r.csv"), "--json", "--schedule-at",
                   "2030-01-01 10:00")  # fmt: skip
    assert naive.json()["job"]["scheduled_at"] == "2030-01-01T10:00:00Z"


# -- steering jobs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("show", "42"), ("pause", "42"), ("resume", "42"), ("cancel", "42"), ("watch", "42"),
     ("restart-failed", "42")],
)  # fmt: skip
def test_unknown_job_is_a_clear_error(database: str, cli: Cli, args: tuple[str, ...]) -> None:
    result = cli("jobs", *args)
    assert (result.code, result.err) == (1, "error: job 42 does not exist\n")


def test_pause_resume_cancel(templates: None, cli: Cli, tmp_path: Path) -> None:
    job_id = create(cli, write_csv(tmp_path / "r.csv"), "--json").json()["job"]["id"]
    assert cli("jobs", "pause", str(job_id)).out == f"job {job_id} paused: now paused\n"
    assert show(cli, job_id)["job"]["status"] == "paused"
    assert cli("jobs", "pause", str(job_id)).out == f"job {job_id} is already paused\n"
    assert cli("jobs", "resume", str(job_id)).code == 0
    assert show(cli, job_id)["job"]["status"] == "processing"
    cancelled = cli("jobs", "cancel", str(job_id))
    assert cancelled.code == 0
    summary = show(cli, job_id)
    assert summary["job"]["status"] == "cancelled"
    assert summary["counts"]["cancelled"] == 2
    again = cli("jobs", "cancel", str(job_id))
    assert (again.code, again.err) == (
        1, f"error: job {job_id} is already cancelled: nothing to cancel\n")  # fmt: skip
    resumed = cli("jobs", "resume", str(job_id))
    assert resumed.code == 1
    assert "only a paused or draft job can be resumed" in resumed.err


def test_resume_starts_a_draft(templates: None, cli: Cli, tmp_path: Path) -> None:
    job_id = create(cli, write_csv(tmp_path / "r.csv"), "--draft", "--json").json()["job"]["id"]
    assert cli("jobs", "pause", str(job_id)).code == 1
    assert cli("jobs", "resume", str(job_id)).code == 0
    assert show(cli, job_id)["job"]["status"] == "processing"


def test_list_and_show(templates: None, cli: Cli, tmp_path: Path) -> None:
    first = create(cli, write_csv(tmp_path / "r.csv"), "--json").json()["job"]["id"]
    second = create(cli, write_csv(tmp_path / "r.csv"), "--json").json()["job"]["id"]
    listed = cli("jobs", "list", "--json").json()
    assert [job["id"] for job in listed] == [second, first]
    assert cli("jobs", "list", "--limit", "1", "--json").json()[0]["id"] == second
    human = cli("jobs", "list")
    assert human.code == 0
    assert "statement r.csv" in human.out
    summary = show(cli, first)
    assert set(summary["counts"]) == {"pending", "queued", "sending", "sent", "failed",
                                      "suppressed", "cancelled", "expired", "unknown"}  # fmt: skip
    text = cli("jobs", "show", str(first))
    assert "unknown" in text.out
    assert "ann@example.com" not in text.out


def _fail_emails(database: str, job_id: int) -> None:
    """Settle a job as if every send had failed (what the consumers would record)."""
    path = database.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE delivery_email SET status = 'failed', attempts = 3, "
                     "last_error = '550 <ann@example.com>: mailbox unavailable' "
                     "WHERE job_id = ?", (job_id,))  # fmt: skip
        conn.execute("UPDATE delivery_job SET status = 'failed', failed_count = 2 "
                     "WHERE id = ?", (job_id,))  # fmt: skip


def test_show_last_errors_without_addresses_and_restart_failed(
    database: str, templates: None, cli: Cli, tmp_path: Path
) -> None:
    job_id = create(cli, write_csv(tmp_path / "r.csv"), "--json").json()["job"]["id"]
    _fail_emails(database, job_id)
    summary = show(cli, job_id)
    assert summary["counts"]["failed"] == 2
    assert summary["last_errors"]
    assert all("@" not in error["error"] for error in summary["last_errors"])
    assert "<address>: mailbox unavailable" in summary["last_errors"][0]["error"]

    watched = cli("jobs", "watch", str(job_id))
    assert watched.code == 1
    assert f"job {job_id} failed: 0 sent, 2 failed, 0 unknown of 2" in watched.out

    restarted = cli("jobs", "restart-failed", str(job_id), "--json")
    assert restarted.code == 0, restarted.err
    assert restarted.json()["restarted"] == 2
    after = show(cli, job_id)
    assert after["job"]["status"] == "processing"
    assert after["counts"]["pending"] == 2
    again = cli("jobs", "restart-failed", "--all")
    assert (again.code, again.out) == (0, "0 failed emails of every job will be sent again\n")


def test_watch_a_job_that_is_not_processing_returns_at_once(
    templates: None, cli: Cli, tmp_path: Path
) -> None:
    job_id = create(cli, write_csv(tmp_path / "r.csv"), "--draft", "--json").json()["job"]["id"]
    result = cli("jobs", "watch", str(job_id))
    assert result.code == 0
    assert f"job {job_id} draft: 0 sent, 0 failed, 0 unknown of 2" in result.out


# -- MariaDB ----------------------------------------------------------------------------


def test_create_and_show_on_mariadb(
    mariadb_url: str, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DELIVERY_DATABASE_URL", mariadb_url)
    assert cli("db", "upgrade").code == 0
    assert cli("templates", "push", str(TEMPLATES)).code == 0
    result = create(cli, write_csv(tmp_path / "r.csv"), "--json")
    assert result.code == 0, result.err
    job_id = result.json()["job"]["id"]
    summary = show(cli, job_id)
    assert (summary["job"]["status"], summary["counts"]["pending"]) == ("processing", 2)
    assert cli("jobs", "pause", str(job_id)).code == 0
    assert cli("jobs", "cancel", str(job_id)).code == 0
    assert show(cli, job_id)["counts"]["cancelled"] == 2
