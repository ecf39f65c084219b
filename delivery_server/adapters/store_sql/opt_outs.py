"""Recipients who opted out at the provider (SNS's SMS opt-out list): found at the send.

The claimed email becomes ``suppressed`` with its attempt given back (nothing was sent)
and its recipient goes on the suppression list, in one transaction, so that the next
claim of that recipient, in any job, is suppressed without asking the provider again.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import Queries, clip_error
from delivery_server.adapters.store_sql.email_statements import SETTLEABLE
from delivery_server.adapters.store_sql.schema import email
from delivery_server.adapters.store_sql.suppressions import (
    run_retrying_conflicts,
    upsert_suppressions,
)
from delivery_server.models import EmailStatus, Suppression, SuppressionReason, utcnow
from delivery_server.suppression import normalise_address

_EMAIL_ID = sa.bindparam("b_email_id", type_=sa.BigInteger)
_MARK_OPTED_OUT = (
    sa.update(email)
    .where(email.c.id == _EMAIL_ID, email.c.status.in_(SETTLEABLE))
    .values(
        status=EmailStatus.SUPPRESSED,
        attempts=sa.case((email.c.attempts > 0, email.c.attempts - 1), else_=0),
        lease_until=None,
        last_error=sa.bindparam("b_error", type_=sa.Text),
        updated_at=sa.bindparam("b_now", type_=sa.DateTime),
    )
)


class OptOutQueries(Queries):
    """``EmailStore.mark_opted_out``."""

    async def mark_opted_out(self, email_id: int, error: str) -> None:
        """Settle a claimed email as ``suppressed`` (its attempt given back) and put its
        recipient on the suppression list (reason ``unsubscribe``)."""

        async def work(conn: AsyncConnection) -> None:
            address = await conn.scalar(sa.select(email.c.to_address).where(email.c.id == email_id))
            if address and normalise_address(address):
                entry = Suppression(
                    normalise_address(address),
                    SuppressionReason.UNSUBSCRIBE,
                    note=f"opted out at the provider (email {email_id})",
                )
                await upsert_suppressions(conn, [entry])
            params = {"b_email_id": email_id, "b_error": clip_error(error), "b_now": utcnow()}
            await conn.execute(_MARK_OPTED_OUT, params)

        await run_retrying_conflicts(self._db, work)
