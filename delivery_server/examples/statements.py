"""Made-up bank customers for the demo, each with a recipients record and a PDF statement.

Customer ``n`` is derived from ``n`` alone (its own seeded random generator), so worker
processes can write PDFs for any range of customers without sharing state, and the
recipients file written by the parent agrees with every PDF.

A few customers' addresses are SES mailbox simulator addresses (``simulator_mailbox``), so
that the demo shows what happens after the send: 1 % bounce, a few complain, one is on
SES's suppression list. Each carries a ``+label`` naming the customer, so every customer
keeps an address of their own (and a suppression of their own).
"""

from __future__ import annotations

import importlib.util
import json
import random
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delivery_server.errors import DeliveryError

PERIOD = "2024"
CURRENCY = "EUR"
LOCALES = ("en", "de", "fr")
_FIRST = {
    "en": ("Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Noah", "Emily", "Jack"),
    "de": ("Jörg", "Anna", "Lukas", "Mia", "Felix", "Lea", "Jürgen", "Sophie", "Paul"),
    "fr": ("Léa", "Hugo", "Chloé", "Louis", "Inès", "Gabriel", "Zoé", "Théo", "Manon"),
}
_LAST = {
    "en": ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Evans", "Thomas"),
    "de": ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Becker", "Schäfer"),
    "fr": ("Martin", "Bernard", "Dubois", "Lefèvre", "Moreau", "Laurent", "Girard"),
}
_PAYEES = (
    ("Salary", 180_000, 420_000),
    ("Rent", -160_000, -60_000),
    ("Supermarket", -15_000, -1_500),
    ("Electricity", -12_000, -4_000),
    ("Restaurant", -9_000, -1_800),
    ("Train tickets", -20_000, -2_000),
    ("Insurance", -30_000, -8_000),
    ("Bookshop", -6_000, -900),
)
_LABELS = {
    "en": ("Statement", "Customer", "Account", "Period", "Date", "Description", "Amount",
           "Opening balance", "Closing balance"),
    "de": ("Kontoauszug", "Kunde", "Konto", "Zeitraum", "Datum", "Buchung", "Betrag",
           "Anfangssaldo", "Endsaldo"),
    "fr": ("Relevé de compte", "Client", "Compte", "Période", "Date", "Opération", "Montant",
           "Solde initial", "Solde final"),
}  # fmt: skip

# SES's mailbox simulator (the outbox and the stand-in honour it as SES does).
SIMULATOR_DOMAIN = "simulator.amazonses.com"
# Which customers the simulator answers for, by number: small numbers first, so that even
# a short demo run (50 customers) shows a bounce, a complaint and a suppression-list hit.
BOUNCE_EVERY, BOUNCE_AT = 100, 7  # customers 7, 107, 207, ...: 1 %
COMPLAINT_EVERY, COMPLAINT_AT = 300, 23  # customers 23, 323, 623, ...: 1 in 300
SUPPRESSION_LIST_CUSTOMER = 41  # already on SES's own suppression list: one customer


@dataclass(frozen=True, slots=True)
class Customer:
    number: int
    name: str
    email: str
    locale: str
    account: str
    opening_cents: int
    transactions: tuple[tuple[str, str, int], ...]  # (date, description, cents)

    @property
    def closing_cents(self) -> int:
        return self.opening_cents + sum(cents for _, _, cents in self.transactions)


def simulator_mailbox(number: int) -> str | None:
    """The mailbox simulator's mailbox customer ``number`` writes to, if any."""
    if number == SUPPRESSION_LIST_CUSTOMER:
        return "suppressionlist"
    if number % BOUNCE_EVERY == BOUNCE_AT:
        return "bounce"
    if number % COMPLAINT_EVERY == COMPLAINT_AT:
        return "complaint"
    return None


def customer(number: int) -> Customer:
    """Customer ``number``, the same every time."""
    rng = random.Random(number)
    locale = LOCALES[number % len(LOCALES)]
    first, last = rng.choice(_FIRST[locale]), rng.choice(_LAST[locale])
    local_part = _ascii(f"{first}.{last}").lower()
    country = {"en": "GB", "de": "DE", "fr": "FR"}[locale]
    transactions = sorted(
        (f"{PERIOD}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", payee,
         rng.randint(low, high))
        for payee, low, high in rng.sample(_PAYEES, k=rng.randint(4, len(_PAYEES)))
    )  # fmt: skip
    mailbox = simulator_mailbox(number)
    email = (
        f"{local_part}.{number}@example.com"
        if mailbox is None
        else f"{mailbox}+{local_part}.{number}@{SIMULATOR_DOMAIN}"
    )
    return Customer(
        number=number,
        name=f"{first} {last}",
        email=email,
        locale=locale,
        account=_iban(country, f"{number:010d}{rng.randrange(10**8):08d}"),
        opening_cents=rng.randint(-50_000, 2_000_000),
        transactions=tuple(transactions),
    )


def money(cents: int, locale: str) -> str:
    """``1,234.56`` (en), ``1.234,56`` (de), ``1 234,56`` (fr)."""
    text = f"{cents / 100:,.2f}"
    if locale == "de":
        return text.replace(",", "_").replace(".", ",").replace("_", ".")
    if locale == "fr":
        return text.replace(",", " ").replace(".", ",")
    return text


def attachment_filename(person: Customer) -> str:
    return f"statement-{PERIOD}-{person.account[-4:]}.pdf"


def recipient_record(person: Customer) -> dict[str, Any]:
    """The JSONL line of one customer: address, locale, variables and the PDF."""
    return {
        "email": person.email,
        "locale": person.locale,
        "name": person.name,
        "account": person.account,
        "period": PERIOD,
        "balance": money(person.closing_cents, person.locale),
        "currency": CURRENCY,
        "transactions": [
            {"date": date, "description": text, "amount": money(cents, person.locale)}
            for date, text, cents in person.transactions
        ],
        "attachments": [
            {
                "uri": f"file:statements/{person.number}.pdf",
                "filename": attachment_filename(person),
                "content_type": "application/pdf",
            }
        ],
    }


def write_recipients(path: Path, count: int) -> None:
    """The recipients file for customers 1..count, one line at a time."""
    with path.open("w", encoding="utf-8") as stream:
        for number in range(1, count + 1):
            stream.write(json.dumps(recipient_record(customer(number)), ensure_ascii=False))
            stream.write("\n")


def write_statements(directory: str, start: int, stop: int) -> int:
    """Write ``<n>.pdf`` for customers start..stop-1; runs in a worker process."""
    for number in range(start, stop):
        write_statement(customer(number), Path(directory) / f"{number}.pdf")
    return stop - start


def require_pdf_writer() -> None:
    """Fail before any work when fpdf2 (the ``demo`` extra) is not installed."""
    # Only looked up here: the PDFs are written in worker processes, which import it.
    if importlib.util.find_spec("fpdf") is None:
        raise DeliveryError(
            "the demo writes PDF statements with fpdf2, which is not installed: "
            "pip install 'delivery-server[demo]'"
        )


def write_statement(person: Customer, path: Path) -> None:
    """One page: who, which account, the year's transactions and the balances."""
    from fpdf import FPDF  # imported here: only the demo's worker processes need it

    labels = _LABELS[person.locale]
    pdf = FPDF()
    pdf.set_title(f"{labels[0]} {PERIOD}")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 12, f"Example Bank - {labels[0]} {PERIOD}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    for label, value in ((labels[1], person.name), (labels[2], person.account),
                         (labels[3], f"01/{PERIOD} - 12/{PERIOD}")):  # fmt: skip
        pdf.cell(40, 7, label)
        pdf.cell(0, 7, value, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(35, 8, labels[4], border="B")
    pdf.cell(100, 8, labels[5], border="B")
    pdf.cell(45, 8, f"{labels[6]} ({CURRENCY})", border="B", align="R", new_x="LMARGIN",
             new_y="NEXT")  # fmt: skip
    pdf.set_font("Helvetica", size=11)
    rows = [("", labels[7], person.opening_cents), *person.transactions]
    for date, text, cents in rows:
        pdf.cell(35, 7, date)
        pdf.cell(100, 7, text)
        pdf.cell(45, 7, money(cents, person.locale), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(135, 9, labels[8], border="T")
    pdf.cell(45, 9, money(person.closing_cents, person.locale), border="T", align="R")
    pdf.output(str(path))


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if char.isascii())


def _iban(country: str, bban: str) -> str:
    """A syntactically valid IBAN (mod-97 check digits) for a made-up account."""
    letters = "".join(str(ord(char) - 55) for char in country)
    check = 98 - int(f"{bban}{letters}00") % 97
    return f"{country}{check:02d}{bban}"
