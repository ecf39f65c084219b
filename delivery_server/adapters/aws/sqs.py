"""``ports.Queue`` on Amazon SQS (standard queue) through aiobotocore.

The calls go through ``direct`` (the client's endpoint, credentials, signer and error
parser, without its per-call pipeline) unless ``DELIVERY_AWS_HTTP=sdk``, which makes them
through the client itself.

Every SQS call is safe to repeat: a duplicate message is harmless because claims are
conditional (DESIGN §4), and delete/visibility changes are idempotent. So, unlike the
senders, this adapter retries (botocore's standard mode on the client; the same attempts
and backoff on the direct path) before an error reaches us.

How vendor errors become ``errors`` classes (after those retries) is ``sqs_errors``'s table.

Per-message outcomes are not errors: ``publish`` returns the email ids SQS did not take
(never raises for them), ``delete`` ignores receipts SQS calls invalid (the message is
already gone) and ``change_visibility`` ignores a receipt that no longer names an
in-flight message.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore import xform_name
from botocore.exceptions import (
    ClientError,
)

from delivery_server.adapters.aws.direct import SignedJsonClient, open_http
from delivery_server.adapters.aws.session import AwsHttp, fixed_user_agent
from delivery_server.adapters.aws.sqs_errors import (
    CALL_ERRORS,
    SQS_PREFIX,
    error_code,
    translate_sqs_error,
    worth_repeating,
)
from delivery_server.errors import DeliveryError, RetryableError
from delivery_server.models import Delivery, QueueMessage
from delivery_server.retry import Jitter, compute_backoff, retry_until

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient
    from types_aiobotocore_sqs.type_defs import (
        DeleteMessageBatchRequestEntryTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

BATCH_SIZE = 10  # SQS's limit per SendMessageBatch / DeleteMessageBatch / ReceiveMessage
MAX_WAIT_SECONDS = 20  # SQS's longest long poll
MAX_VISIBILITY_TIMEOUT = 43_200
CONNECT_TIMEOUT = 5.0
# A long poll holds the response for up to 20 s: the read timeout must outlast it.
READ_TIMEOUT = MAX_WAIT_SECONDS + 10.0
MAX_ATTEMPTS = 5  # botocore's standard mode: the first call and up to four retries
MAX_BACKOFF = 20.0  # seconds, botocore's standard-mode cap

# A receipt that no longer names an in-flight message: deleted, or visible again.
# Real SQS reports some of these as InvalidParameterValue ("Message does not exist or is
# not available for visibility timeout change").
_GONE_CODES = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue"})


def _chunks(items: Sequence[_T], size: int = BATCH_SIZE) -> list[Sequence[_T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _clamp(value: int, low: int, high: int) -> int:
    return min(max(int(value), low), high)


class SqsQueue:
    """``ports.Queue`` over one SQS queue; build it with ``open_sqs_queue``."""

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        *,
        max_concurrent_batches: int,
        direct: SignedJsonClient | None = None,
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        # The calls without the client's per-call pipeline (``direct``); None: the client.
        self._direct = direct
        # Batches go out concurrently, but never more than the connection pool holds.
        self._batch_slots = asyncio.Semaphore(max_concurrent_batches)

    async def publish(self, messages: Sequence[QueueMessage]) -> set[int]:
        """Send the messages in concurrent batches of ten; return the email ids SQS did not
        accept (refused entries and whole batches whose call failed). Never raises for them."""
        # One message per email is enough (claims are conditional), and SQS refuses a
        # whole batch whose entry ids repeat.
        unique = list({message.email_id: message for message in messages}.values())
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {"Id": str(message.email_id), "MessageBody": message.to_body()} for message in unique
        ]
        results = await asyncio.gather(*(self._send_batch(batch) for batch in _chunks(entries)))
        return set().union(*results)

    async def receive(
        self, max_messages: int, wait_seconds: float, visibility_timeout: int
    ) -> list[Delivery]:
        """Long-poll for up to ``min(10, max_messages)`` messages, each then hidden for
        ``visibility_timeout`` seconds (clamped to SQS's limits)."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        response = await self._call(
            "ReceiveMessage",
            {
                "QueueUrl": self._queue_url,
                "MaxNumberOfMessages": min(BATCH_SIZE, max_messages),
                "WaitTimeSeconds": _clamp(int(wait_seconds), 0, MAX_WAIT_SECONDS),
                "VisibilityTimeout": _clamp(visibility_timeout, 0, MAX_VISIBILITY_TIMEOUT),
                "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
            },
        )
        return [
            Delivery(
                body=message["Body"],
                receipt=message["ReceiptHandle"],
                receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for message in response.get("Messages", [])
        ]

    async def delete(self, receipts: Sequence[str]) -> None:
        """Delete settled messages in concurrent batches of ten. Receipts SQS calls invalid
        are skipped (already gone); any other failure raises after every batch was tried."""
        batches = _chunks(list(dict.fromkeys(receipts)))
        results = await asyncio.gather(
            *(self._delete_batch(batch) for batch in batches), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def change_visibility(self, receipt: str, timeout_seconds: int) -> None:
        """Show the message again after ``timeout_seconds`` (clamped to 0..43200). A receipt
        that no longer names an in-flight message is ignored: it is gone or visible already."""
        try:
            await self._request(
                "ChangeMessageVisibility",
                {
                    "QueueUrl": self._queue_url,
                    "ReceiptHandle": receipt,
                    "VisibilityTimeout": _clamp(timeout_seconds, 0, MAX_VISIBILITY_TIMEOUT),
                },
            )
        except ClientError as exc:
            if error_code(exc) not in _GONE_CODES:
                raise translate_sqs_error(exc, "ChangeMessageVisibility") from exc
            log.debug("queue.change_visibility_ignored", code=error_code(exc))
        except CALL_ERRORS as exc:
            raise translate_sqs_error(exc, "ChangeMessageVisibility") from exc

    async def backlog(self) -> int:
        """SQS's ApproximateNumberOfMessages (visible messages)."""
        response = await self._call(
            "GetQueueAttributes",
            {"QueueUrl": self._queue_url, "AttributeNames": ["ApproximateNumberOfMessages"]},
        )
        return int(response.get("Attributes", {}).get("ApproximateNumberOfMessages", 0))

    async def depth(self) -> int:
        """Every message SQS holds: ApproximateNumberOfMessages (visible) +
        ApproximateNumberOfMessagesNotVisible (in flight) + ApproximateNumberOfMessagesDelayed."""
        response = await self._call(
            "GetQueueAttributes",
            {
                "QueueUrl": self._queue_url,
                "AttributeNames": [
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            },
        )
        attributes = response.get("Attributes", {})
        return (
            int(attributes.get("ApproximateNumberOfMessages", 0))
            + int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0))
            + int(attributes.get("ApproximateNumberOfMessagesDelayed", 0))
        )

    # -- internals ---------------------------------------------------------------------

    async def _send_batch(self, entries: Sequence[SendMessageBatchRequestEntryTypeDef]) -> set[int]:
        """Send up to ten entries (``Id`` = the email id); return the ids not accepted."""
        async with self._batch_slots:
            try:
                response = await self._call(
                    "SendMessageBatch", {"QueueUrl": self._queue_url, "Entries": entries}
                )
            except DeliveryError as exc:
                log.warning("queue.publish_batch_failed", messages=len(entries), error=str(exc))
                return {int(entry["Id"]) for entry in entries}
        failed = response.get("Failed", [])
        if failed:
            codes = sorted({entry["Code"] for entry in failed})
            log.warning("queue.publish_entries_refused", messages=len(failed), codes=codes)
        return {int(entry["Id"]) for entry in failed}

    async def _delete_batch(self, receipts: Sequence[str]) -> None:
        entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": str(index), "ReceiptHandle": receipt} for index, receipt in enumerate(receipts)
        ]
        async with self._batch_slots:
            response = await self._call(
                "DeleteMessageBatch", {"QueueUrl": self._queue_url, "Entries": entries}
            )
        failed = response.get("Failed", [])
        refused = [
            entry
            for entry in failed
            if entry["Code"].removeprefix(SQS_PREFIX) != "ReceiptHandleIsInvalid"
        ]
        if len(failed) > len(refused):
            log.debug("queue.delete_already_gone", messages=len(failed) - len(refused))
        if refused:
            codes = sorted({entry["Code"] for entry in refused})
            raise RetryableError(f"SQS DeleteMessageBatch refused {len(refused)} receipts: {codes}")

    async def _call(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One SQS call (retried as below), its failure translated into the error tree."""
        try:
            return await self._request(action, params)
        except CALL_ERRORS as exc:
            raise translate_sqs_error(exc, action) from exc

    async def _request(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One SQS call; raises what the client (or the direct path) raises.

        The client retries by itself (botocore's standard mode); the direct path makes one
        request per call, so the same policy is applied here: up to ``MAX_ATTEMPTS`` for
        throttling, transient and transport errors, full-jitter exponential backoff."""
        if self._direct is None:
            method = getattr(self._client, xform_name(action))
            response: dict[str, Any] = await method(**params)
            return response
        direct = self._direct
        return await retry_until(
            lambda: direct.call(action, params),
            retry_on=lambda exc: isinstance(exc, CALL_ERRORS) and worth_repeating(exc, action),
            # botocore's standard mode: random(0, 1) x 2^(attempt - 1), at most 20 s.
            delay=lambda failures: compute_backoff(
                failures, base=1.0, cap=MAX_BACKOFF, jitter=Jitter.FULL, rng=random.random
            ),
            attempts=MAX_ATTEMPTS,
        )


@asynccontextmanager
async def open_sqs_queue(
    queue_url: str,
    *,
    endpoint_url: str | None = None,
    max_connections: int = 20,
    region_name: str | None = None,
    http: AwsHttp = "direct",
) -> AsyncIterator[SqsQueue]:
    """An ``SqsQueue`` on its own aiobotocore client (and, with ``http="direct"``, its own
    aiohttp session for the direct path), closed on exit.

    ``max_connections`` bounds the HTTP connection pool and, with it, how many batches go
    out at once. Credentials and (unless given) the region come from the standard AWS
    variables.
    """
    session = get_session()
    user_agent = fixed_user_agent(session)
    config = AioConfig(
        max_pool_connections=max_connections,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        user_agent=user_agent,
    )
    async with session.create_client(
        "sqs", region_name=region_name, endpoint_url=endpoint_url, config=config
    ) as client:
        if http == "sdk":
            yield SqsQueue(client, queue_url, max_concurrent_batches=max_connections)
            return
        credentials = await session.get_credentials()
        timeout = aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)
        async with open_http(session, max_connections=max_connections, timeout=timeout) as web:
            direct = SignedJsonClient(client, credentials, web, user_agent=user_agent)
            yield SqsQueue(client, queue_url, max_concurrent_batches=max_connections, direct=direct)
