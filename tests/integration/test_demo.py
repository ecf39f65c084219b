"""``delivery-server demo``: every customer gets their own statement, and only theirs."""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from delivery_server.cli.demo import MARKER, DemoDirectoryError, prepare_directory
from delivery_server.sms import count_segments

REPO = Path(__file__).resolve().parents[2]
SUBJECT_START = {
    "en": "Your 2024 statement for account ending ",
    "de": "Ihr Kontoauszug 2024 für das Konto mit der Endung ",
    "fr": "Votre relevé 2024 pour le compte se terminant par ",
}
GREETING = {"en": "Dear {name},", "de": "Guten Tag {name},", "fr": "Bonjour {name},"}


def run_demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The demo must work with nothing configured: no DELIVERY_* variable reaches it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    return subprocess.run(
        [sys.executable, "-m", "delivery_server", "demo", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


def read_eml(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def check_belongs_to(message: EmailMessage, record: dict[str, Any], output: Path) -> None:
    """Subject, bodies and PDF of ``message`` are those of the customer in ``record``."""
    locale, account = record["locale"], record["account"]
    assert message["Subject"] == SUBJECT_START[locale] + account[-4:]
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    text_body = text.get_content()
    assert GREETING[locale].format(name=record["name"]) in text_body
    assert account in text_body
    assert f"{record['balance']} EUR" in text_body
    assert record["name"] in html.get_content()
    [attachment] = list(message.iter_attachments())
    [expected] = record["attachments"]
    assert attachment.get_filename() == expected["filename"]
    assert attachment.get_content_type() == "application/pdf"
    pdf = output / expected["uri"].removeprefix("file:")
    assert attachment.get_content() == pdf.read_bytes()


@pytest.mark.timeout(300)
def test_demo_sends_every_customer_their_own_statement(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "--emails", "50")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "50 sent" in result.stdout
    # Customers 7 (bounce@), 23 (complaint@) and 41 (suppressionlist@) of the mailbox
    # simulator; the demo waited for every report. Rich wraps long lines: compare words.
    words = " ".join(result.stdout.split())
    assert "after the send: 47 delivered, 2 bounced, 1 complained" in words
    assert "3 addresses now suppressed" in words
    assert "not reported on yet" not in words
    output = tmp_path / "demo-output"
    records = {
        record["email"]: record
        for record in map(json.loads, (output / "recipients.jsonl").read_text().splitlines())
    }
    assert len(records) == 50
    assert {record["locale"] for record in records.values()} == {"en", "de", "fr"}
    emls = sorted((output / "outbox").glob("*.eml"))
    assert len(emls) == 50
    recipients = []
    for path in emls:
        message = read_eml(path)
        assert message["From"] == "Example Bank <statements@bank.example>"
        recipients.append(message["To"])
        check_belongs_to(message, records[message["To"]], output)
    assert sorted(recipients) == sorted(records)

    # A second run starts from scratch in the same directory.
    again = run_demo(tmp_path, "--emails", "3")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert len(list((output / "outbox").glob("*.eml"))) == 3
    assert len(list((output / "statements").glob("*.pdf"))) == 3


def test_demo_never_clears_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(DemoDirectoryError, match="files the demo did not write"):
        prepare_directory(tmp_path)
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_demo_directory_is_recreated(tmp_path: Path) -> None:
    output = prepare_directory(tmp_path / "out")
    (output / "outbox" / "old.eml").write_text("old")
    assert prepare_directory(tmp_path / "out") == output
    assert sorted(p.name for p in output.iterdir()) == [MARKER, "outbox", "statements"]
    assert list((output / "outbox").iterdir()) == []


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("channel", "suffix", "field"), [("sms", ".sms.json", "phone")])
def test_demo_runs_a_job_on_another_channel_into_the_outbox(
    tmp_path: Path, channel: str, suffix: str, field: str
) -> None:
    result = run_demo(tmp_path, "--emails", "12", "--channel", channel)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "12 sent" in result.stdout
    output = tmp_path / "demo-output"
    records = [json.loads(line) for line in (output / "recipients.jsonl").read_text().splitlines()]
    written = sorted((output / "outbox").glob(f"*{suffix}"))
    assert len(written) == 12
    sent = [json.loads(path.read_text()) for path in written]
    # Each customer's own number and their own balance, in their language.
    assert sorted(message[field] for message in sent) == sorted(r[field] for r in records)
    by_number = {r[field]: r for r in records}
    for message in sent:
        assert by_number[message[field]]["balance"] in message["body"]
        # As counted (a French balance's narrow no-break space makes it UCS-2).
        counted = count_segments(message["body"])
        assert (message["encoding"], message["segments"]) == (counted.encoding, counted.segments)
