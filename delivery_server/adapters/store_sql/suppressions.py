"""The suppression list (``SuppressionStore``), and how a claim consults it.

Addresses are stored normalised (``suppression.normalise_address``), so a lookup is one
probe of the primary key. A claim reads, with each email it locks, whether the email's
``LOWER(TRIM(to_address))`` is listed and active; for ASCII addresses (nearly all) that is
the normalised form on both databases. An address SQL cannot normalise the same way (not
ASCII, an international domain, edge whitespace other than spaces) is looked up by its
Python form in one more statement, only in a batch that has one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import INSERT_BATCH, Queries, batches
from delivery_server.adapters.store_sql.database import Database, Work
from delivery_server.adapters.store_sql.rows import suppression_from_row
from delivery_server.adapters.store_sql.schema import ADDRESS_CHARS, email, job, suppression
from delivery_server.errors import PermanentError
from delivery_server.models import (
    EmailStatus,
    JobStatus,
    Suppression,
    SuppressionReason,
    utcnow,
)
from delivery_server.suppression import normalise_address

T = TypeVar("T")

# The label of the "address is suppressed" column a claim reads with each email.
SUPPRESSED = "suppressed"
SUPPRESSED_ERROR = "address is on the suppression list"
# Two writers adding the same new address at once: the loser's INSERT hits the primary
# key (MariaDB has no gap lock to stop it earlier in READ COMMITTED); run it again.
CONFLICT_ATTEMPTS = 3
MAX_NOTE_CHARS = 1000

_NOW = sa.bindparam("b_now", type_=sa.DateTime)
_ACTIVE = sa.or_(suppression.c.expires_at.is_(None), suppression.c.expires_at > _NOW)
_SUPPRESSED_AMONG = sa.select(suppression.c.address).where(
    suppression.c.address.in_(sa.bindparam("b_addresses", expanding=True)), _ACTIVE
)
# Never sent, not an attempt: the email is final, and its job does not count it failed.
_SUPPRESS_QUEUED = (
    sa.update(email)
    .where(
        email.c.id.in_(sa.bindparam("b_email_ids", expanding=True)),
        email.c.status == EmailStatus.QUEUED,
        sa.exists().where(job.c.id == email.c.job_id, job.c.status == JobStatus.PROCESSING),
    )
    .values(status=EmailStatus.SUPPRESSED, last_error=SUPPRESSED_ERROR, updated_at=_NOW)
)


def address_suppressed() -> sa.Label[Any]:
    """Whether the email's address has an active entry (correlated to ``delivery_email``;
    takes the ``b_now`` parameter)."""
    normalised = sa.func.lower(sa.func.trim(email.c.to_address))
    # MariaDB caches a correlated subquery's result by the outer values it reads, compared
    # in their own collation: by ``to_address`` alone, "jäne@" would get the answer of
    # "Jane@" (equal in the emails' case- and accent-blind collation). The email id makes
    # the key exact (tested).
    return (
        sa.exists()
        .where(suppression.c.address == normalised, _ACTIVE, email.c.id.is_not(None))
        .label(SUPPRESSED)
    )


async def suppress_locked(
    conn: AsyncConnection, locked: Sequence[sa.RowMapping], now: datetime
) -> set[int]:
    """Turn the suppressed ones among a claim's locked queued rows (read with
    ``address_suppressed``) ``suppressed``, if their job is processing; return their ids."""
    suppressed = {row["id"] for row in locked if row[SUPPRESSED]}
    suppressed |= await _suppressed_by_python_form(conn, locked, now)
    if suppressed:
        params = {"b_email_ids": sorted(suppressed), "b_now": now}
        await conn.execute(_SUPPRESS_QUEUED, params)
    return suppressed


async def _suppressed_by_python_form(
    conn: AsyncConnection, locked: Sequence[sa.RowMapping], now: datetime
) -> set[int]:
    odd: dict[str, list[int]] = {}
    for row in locked:
        address = row["to_address"]
        normalised = normalise_address(address)
        # LOWER(TRIM()) of an ASCII address: what both databases computed in the claim.
        if row[SUPPRESSED] or (address.isascii() and normalised == address.strip(" ").lower()):
            continue
        odd.setdefault(normalised, []).append(row["id"])
    if not odd:
        return set()
    params = {"b_addresses": sorted(odd), "b_now": now}
    listed = (await conn.execute(_SUPPRESSED_AMONG, params)).scalars()
    return {email_id for address in listed for email_id in odd.get(address, [])}


async def upsert_suppressions(conn: AsyncConnection, entries: Sequence[Suppression]) -> int:
    """Add entries (addresses normalised); an address already listed keeps its entry
    unless the new one lasts longer, then takes its expiry, reason and note (keeping its
    ``created_at``). Return how many entries were added or lengthened.

    A concurrent writer adding the same address makes the INSERT fail with an
    ``IntegrityError``: run the transaction again (``run_retrying_conflicts``)."""
    wanted = _longest_per_address(entries)
    if not wanted:
        return 0
    current: dict[str, datetime | None] = {}
    for addresses in batches(sorted(wanted), INSERT_BATCH):
        rows = await conn.execute(
            sa.select(suppression.c.address, suppression.c.expires_at)
            .where(suppression.c.address.in_(addresses))
            .with_for_update()
        )
        current.update({row.address: row.expires_at for row in rows})
    new = [entry for address, entry in wanted.items() if address not in current]
    for added in batches(new, INSERT_BATCH):
        await conn.execute(sa.insert(suppression), [_row(entry) for entry in added])
    # Entries to lengthen, grouped by what they become (one group, for one command).
    longer: dict[tuple[datetime | None, str, str | None], list[str]] = {}
    for address, entry in wanted.items():
        if address in current and _outlasts(entry.expires_at, current[address]):
            change = (entry.expires_at, entry.reason.value, _clip_note(entry.note))
            longer.setdefault(change, []).append(address)
    for (expires_at, reason, note), lengthened in longer.items():
        for addresses in batches(lengthened, INSERT_BATCH):
            await conn.execute(
                sa.update(suppression)
                .where(suppression.c.address.in_(addresses))
                .values(
                    reason=reason,
                    expires_at=expires_at,
                    note=sa.func.coalesce(note, suppression.c.note),
                )
            )
    return len(new) + sum(len(addresses) for addresses in longer.values())


def _longest_per_address(entries: Sequence[Suppression]) -> dict[str, Suppression]:
    """One entry per normalised address: the one that lasts longest (the first of equals)."""
    wanted: dict[str, Suppression] = {}
    for entry in entries:
        address = normalise_address(entry.address)
        if not address:
            raise PermanentError("a suppression needs an address")
        if len(address) > ADDRESS_CHARS:
            raise PermanentError(f"a suppressed address is longer than {ADDRESS_CHARS} characters")
        known = wanted.get(address)
        if known is None or _outlasts(entry.expires_at, known.expires_at):
            wanted[address] = Suppression(
                address=address,
                reason=entry.reason,
                created_at=entry.created_at,
                expires_at=entry.expires_at,
                note=entry.note,
            )
    return wanted


def _outlasts(new: datetime | None, old: datetime | None) -> bool:
    """Whether an entry expiring at ``new`` lasts longer than one expiring at ``old``
    (None: forever)."""
    return old is not None and (new is None or new > old)


def _clip_note(note: str | None) -> str | None:
    return None if note is None else note[:MAX_NOTE_CHARS]


def _row(entry: Suppression) -> dict[str, Any]:
    return {
        "address": entry.address,
        "reason": entry.reason,
        "created_at": entry.created_at or utcnow(),
        "expires_at": entry.expires_at,
        "note": _clip_note(entry.note),
    }


class SuppressionQueries(Queries):
    """The suppression list as operators and the unsubscribe endpoint change it."""

    async def add_suppressions(self, entries: Sequence[Suppression]) -> int:
        """Suppress addresses; an entry is never shortened (see ``upsert_suppressions``).
        Return how many entries were added or lengthened."""
        listed = list(entries)  # the same entries again if the transaction runs again
        return await run_retrying_conflicts(
            self._db, lambda conn: upsert_suppressions(conn, listed)
        )

    async def unsubscribe_email(self, email_id: int) -> bool:
        """Suppress the address of one email (its one-click unsubscribe link was used),
        reason ``unsubscribe``; False when the email or its address is gone (purged)."""

        async def work(conn: AsyncConnection) -> bool:
            address = await conn.scalar(sa.select(email.c.to_address).where(email.c.id == email_id))
            if not address or not normalise_address(address):
                return False
            entry = Suppression(
                address, SuppressionReason.UNSUBSCRIBE, note=f"unsubscribe link of email {email_id}"
            )
            await upsert_suppressions(conn, [entry])
            return True

        return await run_retrying_conflicts(self._db, work)

    async def remove_suppressions(self, addresses: Sequence[str]) -> int:
        """Take addresses off the list (normalised first); return how many were on it."""
        wanted = sorted({normalise_address(address) for address in addresses})

        async def work(conn: AsyncConnection) -> int:
            removed = 0
            for chunk in batches(wanted, INSERT_BATCH):
                deleted = await conn.execute(
                    sa.delete(suppression).where(suppression.c.address.in_(chunk))
                )
                removed += deleted.rowcount
            return removed

        return await self._db.run(work)

    async def suppressions(self, limit: int, offset: int = 0) -> list[Suppression]:
        """A page of the list, expired entries included, newest first."""
        if limit < 0 or offset < 0:
            raise ValueError("suppressions: limit and offset must not be negative")

        async def read(conn: AsyncConnection) -> list[Suppression]:
            rows = await conn.execute(
                sa.select(suppression)
                .order_by(suppression.c.created_at.desc(), suppression.c.address)
                .limit(limit)
                .offset(offset)
            )
            return [suppression_from_row(row) for row in rows.mappings()]

        return await self._db.run(read, write=False)


async def run_retrying_conflicts(db: Database, work: Work[T]) -> T:
    """``db.run(work)``, run again when it lost a race to insert the same key."""
    attempt = 1
    while True:
        try:
            return await db.run(work)
        except sa_exc.IntegrityError:
            if attempt >= CONFLICT_ATTEMPTS:
                raise
            attempt += 1
