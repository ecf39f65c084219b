"""Emails SES accepted, and the rows a test makes or reads about them, for tracking tests
on a running server (MariaDB + moto): a job sent through moto's SES, an email whose send
is under way, sends recorded or forgotten as a crash would leave them.

Database and HTTP reads here block: call them in a thread (``asyncio.to_thread`` or a
``harness.wait_until`` predicate), since the server answering runs on the test's loop.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from delivery_server.models import JobStatus, utcnow
from delivery_server.ports import Store
from delivery_server.settings import Settings
from tests.integration.harness import create_job, customer, moto_sent, wait_for_job
from tests.support.events_queue import publish
from tests.support.observed import Database, samples, scrape
from tests.support.ses_events import Event

Builder = Callable[..., Event]
OUTCOMES = "delivery_event_outcomes_total"


@dataclass(frozen=True)
class Rig:
    """The moto endpoint, the events queue the server's tracker consumes, its settings."""

    moto: str
    events_url: str
    settings: Settings
    db: Database

    async def publish(self, *bodies: str) -> None:
        await asyncio.to_thread(publish, self.moto, self.events_url, bodies)


@dataclass(frozen=True)
class Sent:
    """An email SES accepted, and what its events carry about it."""

    id: int
    job_id: int
    address: str
    message_id: str
    sent_at: datetime

    def event(self, builder: Builder) -> Event:
        mail = {"email_id": self.id, "job_id": self.job_id, "recipient": self.address}
        return builder(self.message_id, sent_at=self.sent_at, **mail)


def sent_emails(db: Database, job_id: int) -> list[Sent]:
    return [
        Sent(row["id"], job_id, row["to_address"], row["provider_message_id"], row["sent_at"])
        for row in db.emails(job_id)
    ]


async def send_job(rig: Rig, store: Store, count: int, domain: str) -> list[Sent]:
    """A job of ``count`` emails, sent through moto's SES by the running server."""
    job = await create_job(store, [customer(n, domain) for n in range(count)])
    assert (await wait_for_job(store, job.id)).status is JobStatus.COMPLETED
    return await asyncio.to_thread(sent_emails, rig.db, job.id)


def outcomes(port: int) -> dict[str, float]:
    """What became of the events-queue messages (blocking: call it in a thread, since
    the server answering runs on the test's own event loop)."""
    return samples(scrape(port), OUTCOMES, "outcome")


def event_counts(db: Database) -> Counter[tuple[int | None, str]]:
    return Counter((row["email_id"], row["event_type"]) for row in db.events())


async def sending_email(rig: Rig, store: Store) -> Sent:
    """An email claimed by a consumer whose send is under way: no send record yet."""
    job = await create_job(store, [customer(0, "early.example")], start=False)
    [row] = await asyncio.to_thread(rig.db.emails, job.id)
    lease = utcnow() + timedelta(minutes=10)
    changed = await asyncio.to_thread(
        rig.db.execute,
        "UPDATE delivery_email SET status = 'sending', attempts = 1, lease_until = %s"
        " WHERE id = %s",
        lease,
        row["id"],
    )
    assert changed == 1
    return Sent(row["id"], job.id, row["to_address"], f"early-{row['id']}", utcnow())


def record_sends(db: Database, job_id: int, count: int) -> list[Sent]:
    """The first ``count`` emails of a job as SES accepted them (message ids of our own)."""
    changed = db.execute(
        "UPDATE delivery_email SET status = 'sent', attempts = 1, sent_at = %s,"
        " provider_message_id = CONCAT('braked-', id) WHERE job_id = %s ORDER BY id LIMIT %s",
        utcnow(),
        job_id,
        count,
    )
    assert changed == count
    return [mail for mail in sent_emails(db, job_id) if mail.message_id]


def recipients(endpoint: str, domain: str) -> Counter[str]:
    """How many emails moto's SES accepted for each address of ``domain``."""
    return Counter(to for mail in moto_sent(endpoint) for to in mail.to if to.endswith(domain))


def forget_sends(db: Database, lost: Sequence[Sent]) -> None:
    """What a kill -9 right after SES accepted ``lost`` leaves: claimed emails whose lease
    has run out, no message id, and their job still processing."""
    for mail in lost:
        changed = db.execute(
            "UPDATE delivery_email SET status = 'sending', provider_message_id = NULL,"
            " sent_at = NULL, lease_until = %s WHERE id = %s",
            utcnow() - timedelta(minutes=1),
            mail.id,
        )
        assert changed == 1
    db.execute(
        "UPDATE delivery_job SET status = 'processing', finished_at = NULL WHERE id = %s",
        lost[0].job_id,
    )
