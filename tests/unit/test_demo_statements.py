"""The demo's made-up customers: stable, plausible, and their PDFs are real PDFs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from delivery_server.examples.statements import (
    SIMULATOR_DOMAIN,
    customer,
    money,
    recipient_record,
    simulator_mailbox,
    write_recipients,
    write_statements,
)
from delivery_server.recipients import read_recipients


def iban_is_valid(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    digits = "".join(str(int(char, 36)) for char in rearranged)
    return int(digits) % 97 == 1


def test_customers_are_the_same_every_time_and_differ_from_each_other() -> None:
    assert customer(7) == customer(7)
    people = [customer(n) for n in range(1, 301)]
    assert len({person.email for person in people}) == 300
    assert len({person.account for person in people}) == 300
    assert all(iban_is_valid(person.account) for person in people)
    assert {person.locale for person in people} == {"en", "de", "fr"}


def test_a_few_customers_have_mailbox_simulator_addresses() -> None:
    people = [customer(n) for n in range(1, 1001)]
    mailboxes = [simulator_mailbox(person.number) for person in people]
    assert mailboxes.count("bounce") == 10  # 1 %
    assert mailboxes.count("complaint") == 4
    assert mailboxes.count("suppressionlist") == 1
    # Even the first 50 customers show each outcome once.
    assert {mailboxes[n - 1] for n in (7, 23, 41)} == {"bounce", "complaint", "suppressionlist"}
    assert sum(m is not None for m in mailboxes[:50]) == 3
    for person, mailbox in zip(people, mailboxes, strict=True):
        local, _, domain = person.email.partition("@")
        if mailbox is None:
            assert domain == "example.com"
        else:  # a +label of its own: one customer, one address, one suppression
            assert domain == SIMULATOR_DOMAIN
            assert local.startswith(f"{mailbox}+")
            assert local.endswith(f".{person.number}")
    assert len({person.email for person in people}) == 1000


@pytest.mark.parametrize(
    ("cents", "locale", "text"),
    [(123456789, "en", "1,234,567.89"), (123456789, "de", "1.234.567,89"),
     (123456789, "fr", "1 234 567,89"), (-5, "en", "-0.05")],
)  # fmt: skip
def test_money_is_formatted_for_the_locale(cents: int, locale: str, text: str) -> None:
    assert money(cents, locale) == text


def test_recipients_file_imports_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "recipients.jsonl"
    write_recipients(path, 20)
    rows = list(read_recipients(path))
    assert [line for line, _ in rows] == list(range(1, 21))
    assert all(not isinstance(item, str) for _, item in rows)
    first = json.loads(path.read_text().splitlines()[0])
    assert first == recipient_record(customer(1))
    assert first["attachments"][0]["uri"] == "file:statements/1.pdf"


def test_statements_are_pdfs(tmp_path: Path) -> None:
    assert write_statements(str(tmp_path), 1, 4) == 3
    for number in (1, 2, 3):
        data = (tmp_path / f"{number}.pdf").read_bytes()
        assert data.startswith(b"%PDF-")
        assert data.rstrip().endswith(b"%%EOF")
