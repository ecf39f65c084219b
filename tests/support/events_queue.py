"""An SES events queue on a real SQS endpoint (moto), fed the way AWS feeds it: boto3
publishes message bodies (SNS envelopes, raw events, EventBridge events) in batches.

Blocking calls: from async tests run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import boto3

# SQS has taken messages up to 1 MiB since 2025 (256 KiB before): a queue allowing them
# lets a test put a message above the tracker's own 256 KiB limit on a real queue.
LARGEST_MESSAGE_BYTES = 1024 * 1024
# SendMessageBatch takes 10 messages and 1 MiB in all; larger bodies go one by one.
BATCH_MESSAGES = 10
BATCH_BODY_BYTES = 64 * 1024


def sqs_client(endpoint: str) -> Any:
    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")


def create_events_queue(endpoint: str, name: str = "ses-events") -> str:
    """A queue for SES events taking messages up to ``LARGEST_MESSAGE_BYTES``; its URL."""
    attributes = {"MaximumMessageSize": str(LARGEST_MESSAGE_BYTES)}
    url: str = sqs_client(endpoint).create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url


def publish(endpoint: str, queue_url: str, bodies: Sequence[str]) -> None:
    """Put ``bodies`` on the queue in order, ten to a request (a large one alone)."""
    sqs = sqs_client(endpoint)
    batch: list[str] = []

    def flush() -> None:
        entries = [{"Id": str(n), "MessageBody": body} for n, body in enumerate(batch)]
        if entries:
            failed = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")
            assert not failed, f"SQS refused part of a batch: {failed}"
        batch.clear()

    for body in bodies:
        if len(body.encode()) > BATCH_BODY_BYTES:
            flush()
            sqs.send_message(QueueUrl=queue_url, MessageBody=body)
            continue
        batch.append(body)
        if len(batch) == BATCH_MESSAGES:
            flush()
    flush()


def queue_depth(endpoint: str, queue_url: str) -> int:
    """Messages in the queue, visible or not (received and not yet deleted)."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs_client(endpoint).get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=names
    )["Attributes"]
    return sum(int(attributes[name]) for name in names)
