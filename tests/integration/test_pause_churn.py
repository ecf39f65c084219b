"""Pause without churn (issue 11 §7), end to end on MariaDB, moto SQS and SES.

A paused job's messages used to be received, claimed and hidden again every minute for
as long as the pause lasted. Now each is received once: its email goes back to
``pending`` and the message is deleted, so the queue holds nothing of the paused job;
on resume the publisher publishes the emails again and each is sent exactly once, even
when the queue held duplicate messages. The same whether an operator or the reputation
brake paused the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from delivery_server.models import EmailStatus, JobStatus, QueueMessage
from tests.integration.harness import (
    RunningServer,
    aws_client,
    aws_settings,
    create_job,
    create_sqs_queue,
    customer,
    prepared_store,
    verify_sender,
    wait_for_job,
    wait_until,
)
from tests.support.fault_proxy import FaultProxy

pytestmark = pytest.mark.timeout(120)

EMAILS = 20
MESSAGE_COUNTS = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


def queue_is_empty(sqs: object, queue_url: str) -> bool:
    """No message left: none visible, none hidden for a later look, none delayed."""
    answer = sqs.get_queue_attributes(  # type: ignore[attr-defined]
        QueueUrl=queue_url, AttributeNames=list(MESSAGE_COUNTS)
    )
    return all(answer["Attributes"][name] == "0" for name in MESSAGE_COUNTS)


def send_messages(sqs: object, queue_url: str, messages: Sequence[QueueMessage]) -> None:
    for start in range(0, len(messages), 10):
        entries = [
            {"Id": str(n), "MessageBody": m.to_body()}
            for n, m in enumerate(messages[start : start + 10])
        ]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[attr-defined]


@pytest.mark.parametrize("paused_by", ["operator", "brake"])
async def test_a_paused_jobs_messages_are_dropped_and_its_emails_sent_once_on_resume(
    paused_by: str, mariadb_url: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    verify_sender(proxy.upstream)
    queue_url = create_sqs_queue(proxy.upstream, f"paused-{paused_by}")
    sqs = aws_client("sqs", proxy.upstream)
    settings = aws_settings(mariadb_url, proxy.endpoint, queue_url, tmp_path)
    async with prepared_store(settings) as store:
        job = await create_job(store, [customer(n) for n in range(EMAILS)])
        published: list[QueueMessage] = []

        async def publish(messages: Sequence[QueueMessage]) -> set[int]:
            published.extend(messages)
            return set()

        # Queued as the publisher queues them, each message twice (duplicates, as a
        # reconciler's republish makes), then paused before any consumer saw one.
        assert await store.publish_pending(job.id, 1000, publish) == EMAILS
        send_messages(sqs, queue_url, published * 2)
        if paused_by == "brake":
            assert await store.pause_job(job.id, "reputation brake: bounce rate 6.0%")
        else:
            await store.set_job_status(job.id, JobStatus.PAUSED, [JobStatus.PROCESSING])

        async with RunningServer(settings):
            await wait_until(
                lambda: queue_is_empty(sqs, queue_url),
                timeout=60,
                what="the paused job's messages deleted, not hidden for a later look",
            )
            counts = (await store.job_summary(job.id)).counts
            assert (counts[EmailStatus.PENDING], counts[EmailStatus.QUEUED]) == (EMAILS, 0)
            assert (await store.job(job.id)).status is JobStatus.PAUSED
            assert sum(proxy.sends.values()) == 0  # never sent while paused

            await store.set_job_status(job.id, JobStatus.PROCESSING, [JobStatus.PAUSED])
            done = await wait_for_job(store, job.id, timeout=60)

    assert (done.status, done.sent_count, done.failed_count) == (JobStatus.COMPLETED, EMAILS, 0)
    assert proxy.sends == {f"c{n}@customers.example": 1 for n in range(EMAILS)}
