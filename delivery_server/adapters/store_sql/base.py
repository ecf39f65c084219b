"""What every group of store queries shares."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from delivery_server.adapters.store_sql.database import Database
from delivery_server.models import ACTIVE_EMAIL_STATUSES, EmailStatus

T = TypeVar("T")

# Keeps one statement's parameters well under max_allowed_packet and SQLite's limits.
INSERT_BATCH = 1000
# Generous for an SMTP reply or an SES error; TEXT holds 64 KiB on MySQL.
MAX_ERROR_CHARS = 4000

ACTIVE = sorted(ACTIVE_EMAIL_STATUSES)
LEASE_EXPIRED = "lease expired while sending"


class Queries:
    """Base of the query mixins that make up ``SqlStore``."""

    _db: Database


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most ``size`` items."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def clip_error(error: str | None) -> str | None:
    """An error message short enough for the ``last_error`` column."""
    return None if error is None else error[:MAX_ERROR_CHARS]


def count_statuses(pairs: Iterable[tuple[str, int]]) -> dict[EmailStatus, int]:
    """Email counts for every status (zero when absent) from (status, count) rows."""
    counts = dict.fromkeys(EmailStatus, 0)
    for status, count in pairs:
        counts[EmailStatus(status)] += count
    return counts
