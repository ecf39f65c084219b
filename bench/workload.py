"""The benchmark's work, in MariaDB: one job of N statement emails, the way upstream
systems register work (DESIGN §3): a template, a job in ``draft``, its emails with
per-recipient variables, 10 % of them with a ~100 KB PDF (one file, referenced by a
``file:`` path), then the job set to ``processing`` when the run starts.

The tables created here are a minimal peer-side copy of DESIGN §3 (its columns, plain
SQL); our server's own runs use its migrations instead (``create_tables=False``).

    from bench.workload import create_schema_and_job, start_job
    work = create_schema_and_job({"host": "127.0.0.1", "user": "root"}, 20_000)
    start_job(work)
"""

from __future__ import annotations

import base64
import json
import os
import random
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql

DEFAULT_DATABASE = "delivery_bench_peers"
DEFAULT_ATTACHMENTS_DIR = Path(tempfile.gettempdir()) / "delivery_bench" / "attachments"
PDF_NAME = "statement.pdf"
PDF_BYTES = 100 * 1024
TEMPLATE_NAME = "statement"
FROM_ADDRESS = "statements@bank.example"
INSERT_BATCH = 2000

SUBJECT = "Your {{ period }} statement, {{ first_name }}"
TEXT_BODY = """\
Dear {{ first_name }} {{ last_name }},

Your statement for {{ period }} (account {{ account }}) is ready.

Opening balance: {{ opening_balance }} EUR
{% for line in lines %}{{ line.date }}  {{ "%-30s"|format(line.label) }} {{ line.amount }} EUR
{% endfor %}Closing balance: {{ closing_balance }} EUR

{% if has_pdf %}Your detailed statement is attached as a PDF.
{% endif %}Kind regards,
Your bank
"""
HTML_BODY = """\
<html><body>
<p>Dear {{ first_name }} {{ last_name }},</p>
<p>Your statement for {{ period }} (account <b>{{ account }}</b>) is ready.</p>
<table>
<tr><td colspan="2">Opening balance</td><td>{{ opening_balance }} EUR</td></tr>
{% for line in lines %}<tr><td>{{ line.date }}</td><td>{{ line.label }}</td>\
<td>{{ line.amount }} EUR</td></tr>
{% endfor %}<tr><td colspan="2">Closing balance</td><td>{{ closing_balance }} EUR</td></tr>
</table>
{% if has_pdf %}<p>Your detailed statement is attached as a PDF.</p>{% endif %}
<p>Kind regards,<br>Your bank</p>
</body></html>
"""

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS delivery_template (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        name VARCHAR(200) NOT NULL,
        locale VARCHAR(20) NOT NULL DEFAULT 'en',
        version INT NOT NULL,
        subject TEXT NOT NULL,
        text_body MEDIUMTEXT NOT NULL,
        html_body MEDIUMTEXT NULL,
        created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
        UNIQUE KEY uq_template (name, locale, version)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS delivery_job (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        name VARCHAR(200) NOT NULL,
        status VARCHAR(20) NOT NULL,
        template_name VARCHAR(200) NOT NULL,
        from_address VARCHAR(320) NOT NULL,
        reply_to VARCHAR(320) NULL,
        scheduled_at DATETIME(6) NULL,
        created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
        started_at DATETIME(6) NULL,
        finished_at DATETIME(6) NULL,
        total_count INT NOT NULL DEFAULT 0,
        sent_count INT NOT NULL DEFAULT 0,
        failed_count INT NOT NULL DEFAULT 0,
        KEY ix_job_status (status)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS delivery_email (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        job_id BIGINT NOT NULL,
        to_address VARCHAR(320) NOT NULL,
        locale VARCHAR(20) NULL,
        variables JSON NOT NULL,
        attachments JSON NULL,
        status VARCHAR(20) NOT NULL,
        attempts INT NOT NULL DEFAULT 0,
        last_error TEXT NULL,
        provider_message_id VARCHAR(200) NULL,
        created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
        updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
            ON UPDATE CURRENT_TIMESTAMP(6),
        sent_at DATETIME(6) NULL,
        KEY ix_email_job_status (job_id, status)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
]

_FIRST = ["Ann", "Bob", "Chloé", "Dmitri", "Eva", "Farid", "Grace", "Hugo", "Inès", "Jun"]
_LAST = ["Martin", "Bernard", "Dubois", "Nguyen", "Schmidt", "Rossi", "García", "Kowalski"]
_LABELS = ["Card payment", "Transfer in", "Direct debit", "ATM withdrawal", "Interest"]


@dataclass(frozen=True, slots=True)
class Workload:
    """Where a created job lives and what it holds."""

    conn_params: Mapping[str, Any]
    database: str
    job_id: int
    emails: int
    with_attachment: int
    attachments_dir: Path
    template_name: str = TEMPLATE_NAME

    def connect(self, **extra: Any) -> pymysql.connections.Connection[Any]:
        """A new autocommit connection to the workload's database."""
        return connect(self.conn_params, database=self.database, **extra)


def connect(
    conn_params: Mapping[str, Any], database: str | None = None, **extra: Any
) -> pymysql.connections.Connection[Any]:
    """A pymysql connection (autocommit unless ``autocommit=False`` is passed)."""
    params: dict[str, Any] = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
    params.update(conn_params)
    params.update({"charset": "utf8mb4", "autocommit": True})
    params.update(extra)
    if database is not None:
        params["database"] = database
    return pymysql.connect(**params)


def write_pdf(directory: Path, size: int = PDF_BYTES) -> Path:
    """One statement PDF of about ``size`` bytes, written once and reused.

    A one-page PDF whose content stream carries a comment of random base64 text, so that
    the attachment weighs about what a real (already compressed) statement weighs.
    """
    path = directory / PDF_NAME
    if path.exists() and abs(path.stat().st_size - size) < 4096:
        return path
    directory.mkdir(parents=True, exist_ok=True)
    text = b"BT /F1 18 Tf 72 720 Td (Annual statement) Tj ET\n"
    pad = max(size - 900, 0)
    padding = base64.b64encode(os.urandom(pad))[:pad]
    stream = text + b"%" + padding + b"\n"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.write_bytes(bytes(out))
    return path


def recipient_variables(index: int, rng: random.Random, has_pdf: bool) -> dict[str, Any]:
    """Per-recipient statement variables (about 600 bytes of JSON)."""
    balance = rng.randint(0, 5_000_000) / 100
    lines: list[dict[str, Any]] = []
    for day in range(1, 6):
        amount = rng.randint(-50_000, 50_000) / 100
        balance += amount
        lines.append(
            {"date": f"2025-12-{day * 5:02d}", "label": rng.choice(_LABELS), "amount": amount}
        )
    return {
        "first_name": _FIRST[index % len(_FIRST)],
        "last_name": _LAST[(index // len(_FIRST)) % len(_LAST)],
        "account": f"FR76 3000 6000 {index:011d}",
        "period": "2025",
        "opening_balance": f"{balance - sum(line['amount'] for line in lines):.2f}",
        "closing_balance": f"{balance:.2f}",
        "lines": lines,
        "has_pdf": has_pdf,
    }


def _email_rows(
    job_id: int, n: int, attachment_ratio: float, seed: int, now: datetime
) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(seed)
    attachment = json.dumps(
        [{"uri": f"file:{PDF_NAME}", "filename": PDF_NAME, "content_type": "application/pdf"}]
    )
    # Every 1/ratio-th email, so that any slice of the job carries the same share.
    step = round(1 / attachment_ratio) if attachment_ratio > 0 else 0
    for index in range(n):
        has_pdf = step > 0 and index % step == step - 1
        yield (
            job_id,
            f"customer{index:07d}@example.com",
            json.dumps(recipient_variables(index, rng, has_pdf)),
            attachment if has_pdf else None,
            "pending",
            now,
            now,
        )


def create_schema_and_job(
    conn_params: Mapping[str, Any],
    n: int,
    attachment_ratio: float = 0.1,
    *,
    database: str = DEFAULT_DATABASE,
    fresh: bool = True,
    create_tables: bool = True,
    attachments_dir: Path = DEFAULT_ATTACHMENTS_DIR,
    seed: int = 5,
) -> Workload:
    """Create (``fresh``: drop and recreate) ``database``, its tables, the statement
    template, the PDF and one ``draft`` job of ``n`` emails. Return where it all is."""
    write_pdf(attachments_dir)
    with connect(conn_params) as conn, conn.cursor() as cur:
        if fresh:
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4")
    with connect(conn_params, database=database, autocommit=False) as conn:
        with conn.cursor() as cur:
            if create_tables:
                for statement in SCHEMA:
                    cur.execute(statement)
            # Timestamps given explicitly: our migrations' tables have no defaults for them.
            now = datetime.now(UTC).replace(tzinfo=None)
            cur.execute(
                "INSERT IGNORE INTO delivery_template (name, locale, version, subject,"
                " text_body, html_body, created_at) VALUES (%s, 'en', 1, %s, %s, %s, %s)",
                (TEMPLATE_NAME, SUBJECT, TEXT_BODY, HTML_BODY, now),
            )
            cur.execute(
                "INSERT INTO delivery_job (name, status, template_name, from_address,"
                " total_count, created_at) VALUES (%s, 'draft', %s, %s, %s, %s)",
                (f"bench-{n}", TEMPLATE_NAME, FROM_ADDRESS, n, now),
            )
            job_id = int(cur.lastrowid)
            batch: list[tuple[Any, ...]] = []
            for row in _email_rows(job_id, n, attachment_ratio, seed, now):
                batch.append(row)
                if len(batch) == INSERT_BATCH:
                    _insert_emails(cur, batch)
                    batch.clear()
            if batch:
                _insert_emails(cur, batch)
        conn.commit()
    step = round(1 / attachment_ratio) if attachment_ratio > 0 else 0
    return Workload(
        conn_params=dict(conn_params),
        database=database,
        job_id=job_id,
        emails=n,
        with_attachment=n // step if step else 0,
        attachments_dir=attachments_dir,
    )


def _insert_emails(cur: Any, rows: list[tuple[Any, ...]]) -> None:
    # pymysql turns executemany of one INSERT ... VALUES into multi-row statements.
    cur.executemany(
        "INSERT INTO delivery_email (job_id, to_address, variables, attachments, status,"
        " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        rows,
    )


def start_job(work: Workload) -> datetime:
    """Hand the job over, as upstream systems do: set it to ``processing``. Return the
    database's UTC time of the change (what ``first_send_seconds`` measures from)."""
    with work.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT UTC_TIMESTAMP(6)")
        (now,) = cur.fetchone()
        cur.execute(
            "UPDATE delivery_job SET status = 'processing' WHERE id = %s AND status = 'draft'",
            (work.job_id,),
        )
    return now  # type: ignore[no-any-return]


def email_counts(work: Workload) -> dict[str, int]:
    """The job's emails by status."""
    with work.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT status, COUNT(*) FROM delivery_email WHERE job_id = %s GROUP BY status",
            (work.job_id,),
        )
        return {str(status): int(count) for status, count in cur.fetchall()}


def first_send_seconds(work: Workload, started_at: datetime) -> float | None:
    """Seconds from ``started_at`` (a naive UTC datetime) to the first ``sent_at``."""
    with work.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT MIN(sent_at) FROM delivery_email WHERE job_id = %s AND status = 'sent'",
            (work.job_id,),
        )
        (first,) = cur.fetchone()
    return None if first is None else round((first - started_at).total_seconds(), 3)
