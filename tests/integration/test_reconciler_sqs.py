"""The reconciler on real MariaDB and moto SQS: stale queued emails whose messages still
wait in the queue are left alone; once the queue is purged, every one is published again."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from delivery_server.models import EmailStatus
from tests.integration.harness import (
    RunningServer,
    aws_client,
    aws_settings,
    create_job,
    create_sqs_queue,
    customer,
    prepared_store,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

EMAILS = 50


def queue_depth(sqs: Any, url: str) -> int:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[name]) for name in names)


def count(logs: Sequence[Mapping[str, Any]], event: str) -> int:
    return sum(1 for entry in logs if entry["event"] == event)


async def test_only_emails_whose_message_is_gone_are_republished(
    mariadb_url: str, moto: str, tmp_path: Path
) -> None:
    url = create_sqs_queue(moto)
    sqs = aws_client("sqs", moto)
    # A publisher only: nothing consumes, so every message stays in the queue.
    settings = aws_settings(
        mariadb_url, moto, url, tmp_path, requeue_after=1.0, reconcile_interval=0.2
    )
    async with prepared_store(settings) as store:
        job = await create_job(store, [customer(n) for n in range(EMAILS)])
        with capture_logs() as logs:
            async with RunningServer(settings, role="publisher"):
                await wait_until(lambda: queue_depth(sqs, url) == EMAILS, what="published")

                # Stale by age, but their messages are all still there: left alone.
                await wait_until(
                    lambda: count(logs, "stale_queued_emails_still_in_queue") >= 2,
                    what="two passes over stale emails",
                )
                assert count(logs, "queued_emails_republished") == 0
                assert queue_depth(sqs, url) == EMAILS

                sqs.purge_queue(QueueUrl=url)  # every message lost

                await wait_until(
                    lambda: count(logs, "queued_emails_republished") >= 1, what="republished"
                )
                passes = count(logs, "stale_queued_emails_still_in_queue")
                # Stale again a second later, and again left alone: no second copy.
                await wait_until(
                    lambda: count(logs, "stale_queued_emails_still_in_queue") >= passes + 2,
                    what="two passes after the republish",
                )
                assert queue_depth(sqs, url) == EMAILS

        summary = await store.job_summary(job.id)

    assert summary.counts[EmailStatus.QUEUED] == EMAILS
    republished = [e["emails"] for e in logs if e["event"] == "queued_emails_republished"]
    assert republished == [EMAILS]  # once, all of them, after the purge only
