"""Emails of paused jobs taken out of the queue (``EmailStore.unqueue_paused``).

A consumer that receives the message of a paused job's email used to hide it for a
minute and look again, so every queued message of a paused job was received, claimed and
hidden once a minute for as long as the pause lasted. Now the email goes back to
``pending`` and its message is deleted: the publisher publishes it again when the job is
``processing`` (it publishes every pending email of a processing job), and nothing of the
paused job is received or claimed meanwhile.

The update is conditional (still ``queued``, its job still ``paused``), so a resume that
came first wins: the email stays queued and the consumer hands its message back to be
claimed. A duplicate message of an email that went back to ``pending`` finds it not
``queued`` at its claim and is dropped, as any stale message is.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import Queries
from delivery_server.adapters.store_sql.schema import email, job
from delivery_server.batching import Batcher
from delivery_server.models import EmailStatus, JobStatus, utcnow

_EMAIL_IDS: sa.BindParameter[Any] = sa.bindparam("b_email_ids", expanding=True)
UNQUEUE_PAUSED = (
    sa.update(email)
    .where(
        email.c.id.in_(_EMAIL_IDS),
        email.c.status == EmailStatus.QUEUED,
        sa.exists().where(job.c.id == email.c.job_id, job.c.status == JobStatus.PAUSED),
    )
    .values(status=EmailStatus.PENDING, updated_at=sa.bindparam("b_now", type_=sa.DateTime))
)
PENDING_OF = sa.select(email.c.id).where(
    email.c.id.in_(_EMAIL_IDS), email.c.status == EmailStatus.PENDING
)
# A pause meets a burst: one receive hands out ten messages, a consumer runs 32 at once.
UNQUEUE_BATCH = 50


class PauseQueries(Queries):
    """Unqueueing the emails of paused jobs, many per transaction (``batching``)."""

    _unqueue: Batcher[int, bool] | None = None

    async def unqueue_paused(self, email_id: int) -> bool:
        """Put a ``queued`` email of a ``paused`` job back to ``pending``; True when it is
        ``pending`` now (its message may go), False when it is not (a resume came first:
        claim it again)."""
        if self._unqueue is None:
            # An abandoned caller leaves a pending email and a message that its next
            # claim drops: nothing to give back.
            self._unqueue = Batcher(self._unqueue_batch, max_size=UNQUEUE_BATCH)
        return await self._unqueue.submit(email_id)

    async def _unqueue_batch(self, email_ids: list[int]) -> list[bool]:
        unique = sorted(set(email_ids))

        async def work(conn: AsyncConnection) -> set[int]:
            params = {"b_email_ids": unique, "b_now": utcnow()}
            await conn.execute(UNQUEUE_PAUSED, params)
            return set((await conn.execute(PENDING_OF, params)).scalars())

        pending = await self._db.run(work)
        return [email_id in pending for email_id in email_ids]

    async def _close_unqueue(self) -> None:
        if self._unqueue is not None:
            await self._unqueue.close()
