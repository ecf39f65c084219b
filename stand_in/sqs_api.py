"""The SQS JSON protocol (``X-Amz-Target: AmazonSQS.<Action>``) over ``SimQueue``.

Errors take the shape botocore's JSON parser expects from SQS: a ``__type`` naming the
modeled exception (``com.amazonaws.sqs#ReceiptHandleIsInvalid``) and the
``x-amzn-query-error: <query code>;Sender`` header, from which botocore takes the error
code that ``ClientError.response["Error"]["Code"]`` shows (the same codes the old query
protocol used, e.g. ``AWS.SimpleQueueService.NonExistentQueue``).

Message attributes are accepted and ignored; FIFO queues are not simulated.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from stand_in.sqs_queue import (
    MAX_RECEIVE_BATCH,
    MAX_VISIBILITY_TIMEOUT,
    MAX_WAIT_SECONDS,
    NotInFlightError,
    ReceiptInvalidError,
    SimQueue,
    StoredMessage,
)

ACCOUNT_ID = "000000000000"
JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
MAX_BODY_BYTES = 262_144
MAX_BATCH_ENTRIES = 10
_RECEIVE_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "ApproximateFirstReceiveTimestamp",
    "SenderId",
)

Payload = dict[str, Any]


class SqsError(Exception):
    """An SQS error response: modeled shape name, query-compatible code, status."""

    def __init__(self, shape: str, message: str, query_code: str | None = None) -> None:
        super().__init__(message)
        self.shape = shape
        self.query_code = query_code or shape
        self.message = message

    def response(self) -> web.Response:
        body = {"__type": f"com.amazonaws.sqs#{self.shape}", "message": self.message}
        return web.Response(
            status=400,
            body=json.dumps(body).encode(),
            headers={
                "Content-Type": JSON_CONTENT_TYPE,
                "x-amzn-query-error": f"{self.query_code};Sender",
            },
        )


def _invalid_receipt(receipt: str) -> SqsError:
    return SqsError(
        "ReceiptHandleIsInvalid", f'The input receipt handle "{receipt}" is not a valid one.'
    )


def _bounded_int(payload: Payload, key: str, default: int, low: int, high: int) -> int:
    value = payload.get(key)
    if value is None:
        return default
    if type(value) is not int or not low <= value <= high:
        raise SqsError(
            "InvalidParameterValue",
            f"Value {value!r} for parameter {key} is invalid: must be between {low} and {high}.",
        )
    return value


def _batch_entries(payload: Payload) -> list[Payload]:
    entries = payload.get("Entries")
    if not entries:
        raise SqsError(
            "EmptyBatchRequest",
            "There should be at least one entry in the request.",
            "AWS.SimpleQueueService.EmptyBatchRequest",
        )
    if len(entries) > MAX_BATCH_ENTRIES:
        raise SqsError(
            "TooManyEntriesInBatchRequest",
            f"Maximum number of entries per request are {MAX_BATCH_ENTRIES}.",
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
        )
    ids = [entry.get("Id") for entry in entries]
    if len(set(ids)) != len(ids):
        raise SqsError(
            "BatchEntryIdsNotDistinct",
            "Two or more batch entries in the request have the same Id.",
            "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
        )
    return list(entries)


def _failed_entry(entry_id: str, code: str, message: str) -> Payload:
    return {"Id": entry_id, "SenderFault": True, "Code": code, "Message": message}


class SqsApi:
    """Every simulated queue, and the HTTP handler answering SQS JSON requests."""

    def __init__(self) -> None:
        self.queues: dict[str, SimQueue] = {}
        self.calls: Counter[str] = Counter()
        self._actions: dict[str, Callable[[Payload, web.Request], Awaitable[Payload]]] = {
            "CreateQueue": self._create_queue,
            "GetQueueUrl": self._get_queue_url,
            "ListQueues": self._list_queues,
            "DeleteQueue": self._delete_queue,
            "PurgeQueue": self._purge_queue,
            "GetQueueAttributes": self._get_queue_attributes,
            "SendMessage": self._send_message,
            "SendMessageBatch": self._send_message_batch,
            "ReceiveMessage": self._receive_message,
            "DeleteMessage": self._delete_message,
            "DeleteMessageBatch": self._delete_message_batch,
            "ChangeMessageVisibility": self._change_visibility,
            "ChangeMessageVisibilityBatch": self._change_visibility_batch,
        }

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one ``POST /`` carrying an ``X-Amz-Target: AmazonSQS.*`` header."""
        target = request.headers.get("X-Amz-Target", "")
        action = self._actions.get(target.removeprefix("AmazonSQS."))
        if action is None:
            return SqsError("UnsupportedOperation", f"Unknown target {target!r}").response()
        self.calls[target] += 1
        try:
            payload = json.loads(await request.read() or b"{}")
            result = await action(payload, request)
        except SqsError as exc:
            return exc.response()
        except (ValueError, TypeError, AttributeError) as exc:
            return SqsError("InvalidParameterValue", f"Malformed request: {exc}").response()
        return web.Response(
            body=json.dumps(result).encode(), headers={"Content-Type": JSON_CONTENT_TYPE}
        )

    def reset(self) -> None:
        """Forget every queue (parked receivers return empty-handed)."""
        for queue in self.queues.values():
            queue.close()
        self.queues.clear()
        self.calls.clear()

    # -- queues ------------------------------------------------------------------------

    def _queue(self, payload: Payload) -> SimQueue:
        url = payload.get("QueueUrl")
        if not url:
            raise SqsError("InvalidAddress", "The QueueUrl parameter is required.")
        queue = self.queues.get(str(url).rstrip("/").rsplit("/", 1)[-1])
        if queue is None:
            raise _no_such_queue()
        return queue

    @staticmethod
    def _url(request: web.Request, name: str) -> str:
        return f"{request.scheme}://{request.host}/{ACCOUNT_ID}/{name}"

    async def _create_queue(self, payload: Payload, request: web.Request) -> Payload:
        name = str(payload.get("QueueName", ""))
        if not name or len(name) > 80:
            raise SqsError("InvalidParameterValue", "Queue name must be 1 to 80 characters.")
        if name not in self.queues:
            attributes = payload.get("Attributes") or {}
            self.queues[name] = SimQueue(
                name,
                visibility_timeout=int(attributes.get("VisibilityTimeout", 30)),
                delay_seconds=int(attributes.get("DelaySeconds", 0)),
            )
        return {"QueueUrl": self._url(request, name)}

    async def _get_queue_url(self, payload: Payload, request: web.Request) -> Payload:
        name = str(payload.get("QueueName", ""))
        if name not in self.queues:
            raise _no_such_queue()
        return {"QueueUrl": self._url(request, name)}

    async def _list_queues(self, payload: Payload, request: web.Request) -> Payload:
        prefix = str(payload.get("QueueNamePrefix", ""))
        names = sorted(n for n in self.queues if n.startswith(prefix))
        return {"QueueUrls": [self._url(request, n) for n in names]}

    async def _delete_queue(self, payload: Payload, request: web.Request) -> Payload:
        queue = self._queue(payload)
        queue.close()
        del self.queues[queue.name]
        return {}

    async def _purge_queue(self, payload: Payload, request: web.Request) -> Payload:
        self._queue(payload).purge()
        return {}

    async def _get_queue_attributes(self, payload: Payload, request: web.Request) -> Payload:
        queue = self._queue(payload)
        visible, inflight, delayed = queue.counts()
        every = {
            "ApproximateNumberOfMessages": str(visible),
            "ApproximateNumberOfMessagesNotVisible": str(inflight),
            "ApproximateNumberOfMessagesDelayed": str(delayed),
            "VisibilityTimeout": str(queue.visibility_timeout),
            "DelaySeconds": str(queue.delay_seconds),
            "CreatedTimestamp": str(queue.created_s),
            "QueueArn": f"arn:aws:sqs:us-east-1:{ACCOUNT_ID}:{queue.name}",
        }
        names = payload.get("AttributeNames") or ["All"]
        if "All" in names:
            return {"Attributes": every}
        return {"Attributes": {n: every[n] for n in names if n in every}}

    # -- messages ----------------------------------------------------------------------

    @staticmethod
    def _checked_body(entry: Payload) -> str:
        body = entry.get("MessageBody")
        if not isinstance(body, str) or not body:
            raise SqsError("MissingParameter", "The request must contain a MessageBody.")
        if len(body) > MAX_BODY_BYTES // 4 and len(body.encode()) > MAX_BODY_BYTES:
            raise SqsError(
                "InvalidParameterValue",
                f"One or more parameters are invalid. Reason: Message must be shorter than "
                f"{MAX_BODY_BYTES} bytes.",
            )
        return body

    async def _send_message(self, payload: Payload, request: web.Request) -> Payload:
        queue = self._queue(payload)
        delay = _bounded_int(payload, "DelaySeconds", queue.delay_seconds, 0, 900)
        msg = queue.send(self._checked_body(payload), delay)
        return {"MessageId": msg.message_id, "MD5OfMessageBody": msg.md5}

    async def _send_message_batch(self, payload: Payload, request: web.Request) -> Payload:
        queue = self._queue(payload)
        entries = _batch_entries(payload)
        # Like SQS, a bad entry is refused alone, but a batch too large is refused whole.
        accepted: list[tuple[Payload, str, int]] = []
        failed = []
        for entry in entries:
            try:
                body = self._checked_body(entry)
                delay = _bounded_int(entry, "DelaySeconds", queue.delay_seconds, 0, 900)
            except SqsError as exc:
                failed.append(_failed_entry(str(entry.get("Id")), exc.query_code, exc.message))
            else:
                accepted.append((entry, body, delay))
        if sum(len(body) for _, body, _ in accepted) > MAX_BODY_BYTES:
            raise SqsError(
                "BatchRequestTooLong",
                "Batch requests cannot be longer than 262144 bytes.",
                "AWS.SimpleQueueService.BatchRequestTooLong",
            )
        successful = []
        for entry, body, delay in accepted:
            msg = queue.send(body, delay)
            successful.append(
                {"Id": entry["Id"], "MessageId": msg.message_id, "MD5OfMessageBody": msg.md5}
            )
        return {"Successful": successful, "Failed": failed}

    async def _receive_message(self, payload: Payload, request: web.Request) -> Payload:
        queue = self._queue(payload)
        max_messages = _bounded_int(payload, "MaxNumberOfMessages", 1, 1, MAX_RECEIVE_BATCH)
        wait = _bounded_int(payload, "WaitTimeSeconds", 0, 0, MAX_WAIT_SECONDS)
        visibility = _bounded_int(
            payload, "VisibilityTimeout", queue.visibility_timeout, 0, MAX_VISIBILITY_TIMEOUT
        )
        wanted = set(payload.get("MessageSystemAttributeNames") or ())
        wanted.update(payload.get("AttributeNames") or ())
        if "All" in wanted:
            wanted.update(_RECEIVE_ATTRIBUTES)
        taken = await queue.receive(max_messages, wait, visibility)
        if not taken:
            return {}
        return {"Messages": [_message_json(msg, receipt, wanted) for msg, receipt in taken]}

    async def _delete_message(self, payload: Payload, request: web.Request) -> Payload:
        queue = self._queue(payload)
        receipt = str(payload.get("ReceiptHandle", ""))
        try:
            queue.delete(receipt)
        except ReceiptInvalidError:
            raise _invalid_receipt(receipt) from None
        return {}

    async def _delete_message_batch(self, payload: Payload, request: web.Request) -> Payload:
        queue = self._queue(payload)
        successful, failed = [], []
        for entry in _batch_entries(payload):
            receipt = str(entry.get("ReceiptHandle", ""))
            try:
                queue.delete(receipt)
            except ReceiptInvalidError:
                failed.append(
                    _failed_entry(entry["Id"], "ReceiptHandleIsInvalid", "Invalid receipt handle")
                )
            else:
                successful.append({"Id": entry["Id"]})
        return {"Successful": successful, "Failed": failed}

    def _change_one(self, queue: SimQueue, entry: Payload) -> None:
        receipt = str(entry.get("ReceiptHandle", ""))
        timeout = _bounded_int(entry, "VisibilityTimeout", 0, 0, MAX_VISIBILITY_TIMEOUT)
        try:
            queue.change_visibility(receipt, timeout)
        except ReceiptInvalidError:
            raise _invalid_receipt(receipt) from None
        except NotInFlightError:
            raise SqsError(
                "MessageNotInflight",
                "Message does not exist or is not available for visibility timeout change.",
                "AWS.SimpleQueueService.MessageNotInflight",
            ) from None

    async def _change_visibility(self, payload: Payload, request: web.Request) -> Payload:
        if "VisibilityTimeout" not in payload:
            raise SqsError("MissingParameter", "The request must contain VisibilityTimeout.")
        self._change_one(self._queue(payload), payload)
        return {}

    async def _change_visibility_batch(self, payload: Payload, request: web.Request) -> Payload:
        queue = self._queue(payload)
        successful, failed = [], []
        for entry in _batch_entries(payload):
            try:
                self._change_one(queue, entry)
            except SqsError as exc:
                failed.append(_failed_entry(entry["Id"], exc.query_code, exc.message))
            else:
                successful.append({"Id": entry["Id"]})
        return {"Successful": successful, "Failed": failed}


def _no_such_queue() -> SqsError:
    return SqsError(
        "QueueDoesNotExist",
        "The specified queue does not exist.",
        "AWS.SimpleQueueService.NonExistentQueue",
    )


def _message_json(msg: StoredMessage, receipt: str, wanted: set[str]) -> Payload:
    out: Payload = {
        "MessageId": msg.message_id,
        "ReceiptHandle": receipt,
        "MD5OfBody": msg.md5,
        "Body": msg.body,
    }
    if wanted:
        every = {
            "ApproximateReceiveCount": str(msg.receive_count),
            "SentTimestamp": str(msg.sent_ms),
            "ApproximateFirstReceiveTimestamp": str(msg.first_receive_ms),
            "SenderId": ACCOUNT_ID,
        }
        out["Attributes"] = {k: v for k, v in every.items() if k in wanted}
    return out
