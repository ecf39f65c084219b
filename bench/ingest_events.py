"""The events ``bench.ingest`` feeds the tracker: a job of sent emails written straight
into the database, their SES events as the bench's stand-in publishes them (SNS
envelopes), and the publishing onto the stand-in's SQS, all at once or paced."""

from __future__ import annotations

import asyncio
import json
import os
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiobotocore.session import get_session

from bench.ours import base_env
from bench.workload import connect
from delivery_server.adapters.ses_event_payloads import (
    AcceptedMail,
    outcome_events,
    sns_notification,
)
from delivery_server.models import utcnow

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

DATABASE = "bench_ingest"
TOPIC_ARN = "arn:aws:sns:us-east-1:000000000000:ses-events"
FROM_ADDRESS = "statements@bank.example"
INSERT_ROWS = 1000
PUBLISH_CONCURRENCY = 16
TICK = 0.02  # the stand-in's FLUSH_DELAY


def create_job(params: dict[str, Any], emails: int) -> tuple[int, list[int]]:
    """A processing job whose ``emails`` emails are all sent (message ids ``bench-<id>``)."""
    now = utcnow()
    with connect(params, database=DATABASE) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO delivery_job (name, status, template_name, from_address, created_at,"
            " started_at, total_count) VALUES ('ingest', 'processing', 'statement', %s, %s,"
            " %s, %s)",
            (FROM_ADDRESS, now, now, emails),
        )
        job_id = int(cur.lastrowid)
        for start in range(0, emails, INSERT_ROWS):
            rows = [
                (job_id, f"customer{n}@example.com", "{}", "sent", 1, now, now, now)
                for n in range(start, min(emails, start + INSERT_ROWS))
            ]
            cur.executemany(
                "INSERT INTO delivery_email (job_id, to_address, variables, status, attempts,"
                " created_at, updated_at, sent_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
        cur.execute("UPDATE delivery_email SET provider_message_id = CONCAT('bench-', id)")
        cur.execute("SELECT id FROM delivery_email ORDER BY id")
        return job_id, [int(row[0]) for row in cur.fetchall()]


def event_bodies(job_id: int, email_ids: list[int], bounce_rate: float, seed: int) -> list[str]:
    """Every email's events as the bench's stand-in publishes them (SNS envelopes)."""
    rng = random.Random(seed)
    sent_at = utcnow()
    reported_at = sent_at + timedelta(seconds=2)
    bodies = []
    for email_id in email_ids:
        mail = AcceptedMail(
            message_id=f"bench-{email_id}",
            source=FROM_ADDRESS,
            destination=(f"customer{email_id}@example.com",),
            sent_at=sent_at,
            tags={"job_id": str(job_id), "email_id": str(email_id)},
            configuration_set="bench",
        )
        bounce = rng.random() < bounce_rate
        for payload in outcome_events(mail, reported_at, bounce_all=bounce):
            message = json.dumps(payload, separators=(",", ":"))
            envelope = sns_notification(message, TOPIC_ARN, str(uuid.uuid4()), sent_at, "c2ln")
            bodies.append(json.dumps(envelope, separators=(",", ":")))
    return bodies


def reset_tracking(params: dict[str, Any]) -> None:
    """Forget what a repeat recorded: the next records the same events from scratch."""
    with connect(params, database=DATABASE) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM delivery_event")
        cur.execute("DELETE FROM delivery_suppression")
        cur.execute(
            "UPDATE delivery_email SET delivery_status = NULL, delivery_detail = NULL,"
            " delivery_updated_at = NULL, opened_at = NULL, clicked_at = NULL"
        )


async def publish_sqs(endpoint_url: str, queue_url: str, bodies: list[str], rate: float) -> None:
    """Put ``bodies`` on the stand-in's queue, ten to a SendMessageBatch; at ``rate``
    events a second when it is not 0 (a tick every ``TICK`` seconds, as the stand-in
    publishes)."""
    slots = asyncio.Semaphore(PUBLISH_CONCURRENCY)
    async with get_session().create_client(
        "sqs", endpoint_url=endpoint_url, region_name="us-east-1"
    ) as client:

        async def send(chunk: list[str]) -> None:
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {"Id": str(n), "MessageBody": body} for n, body in enumerate(chunk)
            ]
            async with slots:
                answer = await client.send_message_batch(QueueUrl=queue_url, Entries=entries)
            if answer.get("Failed"):
                raise RuntimeError(f"the stand-in refused {len(answer['Failed'])} events")

        async def publish(part: list[str]) -> None:
            chunks = [part[i : i + 10] for i in range(0, len(part), 10)]
            await asyncio.gather(*(send(chunk) for chunk in chunks))

        await paced(bodies, rate, publish)


async def paced(
    bodies: list[str], rate: float, publish: Callable[[list[str]], Awaitable[None]]
) -> None:
    """``publish`` all of ``bodies`` at once (``rate`` 0), or ``rate`` a second."""
    if not rate:
        await publish(bodies)
        return
    loop = asyncio.get_running_loop()
    started, sent = loop.time(), 0
    while sent < len(bodies):
        due = min(len(bodies), int((loop.time() - started) * rate) + 1)
        if due > sent:
            await publish(bodies[sent:due])
            sent = due
        await asyncio.sleep(TICK)


def publisher_process(endpoint_url: str, queue_url: str, bodies: list[str], rate: float) -> None:
    """``publish_sqs`` in a child process: its CPU is not counted as ours."""
    os.environ.update({k: v for k, v in base_env().items() if k.startswith("AWS_")})
    asyncio.run(publish_sqs(endpoint_url, queue_url, bodies, rate))
