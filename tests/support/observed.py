"""What a running server did, read from outside it: rows of its MariaDB database (a
fresh pymysql connection per call, so any thread may call) and samples of its /metrics.

Blocking calls: from async tests run them in ``asyncio.to_thread`` or in a
``harness.wait_until`` predicate (which runs in a thread).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql
import pymysql.cursors
from prometheus_client.parser import text_string_to_metric_families

Row = dict[str, Any]


class Database:
    """Plain SQL on the database a ``mysql://`` URL names."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._connect = {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 3306,
            "user": unquote(parts.username or "root"),
            "password": unquote(parts.password or ""),
            "database": parts.path.lstrip("/"),
            "autocommit": True,
            "cursorclass": pymysql.cursors.DictCursor,
        }

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        conn = pymysql.connect(**self._connect)
        try:
            with conn.cursor() as cursor:
                yield cursor
        finally:
            conn.close()

    def rows(self, sql: str, *args: Any) -> list[Row]:
        with self._cursor() as cursor:
            cursor.execute(sql, args)
            return list(cursor.fetchall())

    def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; the rows it changed."""
        with self._cursor() as cursor:
            return int(cursor.execute(sql, args))

    def emails(self, job_id: int) -> list[Row]:
        return self.rows("SELECT * FROM delivery_email WHERE job_id = %s ORDER BY id", job_id)

    def email(self, email_id: int) -> Row:
        [row] = self.rows("SELECT * FROM delivery_email WHERE id = %s", email_id)
        return row

    def events(self) -> list[Row]:
        return self.rows("SELECT * FROM delivery_event ORDER BY id")

    def suppressions(self) -> dict[str, str]:
        """Suppressed address -> reason."""
        rows = self.rows("SELECT address, reason FROM delivery_suppression")
        return {row["address"]: row["reason"] for row in rows}


def scrape(port: int) -> str:
    """The text of ``GET /metrics`` on a loopback port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text: str = resp.read().decode()
        return text


def samples(text: str, name: str, label: str | None = None) -> dict[str, float]:
    """The samples called ``name`` in a Prometheus text, by the value of ``label`` (by ""
    without one)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[sample.labels.get(label, "") if label else ""] = sample.value
    return found


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value (0 when absent: a labelled counter not yet counted)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0
