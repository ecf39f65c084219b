"""SqsQueue without a server: the error table and per-entry outcomes SQS rarely shows moto."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ReadTimeoutError,
)

from delivery_server.adapters.aws.sqs import SqsQueue
from delivery_server.adapters.aws.sqs_errors import translate_sqs_error
from delivery_server.errors import PermanentError, RetryableError, ThrottledError
from delivery_server.models import QueueMessage

pytestmark = pytest.mark.timeout(30)

URL = "http://127.0.0.1:1/123456789012/q"


def client_error(code: str, status: int, action: str = "SendMessageBatch") -> ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, action)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (client_error("ThrottlingException", 400), ThrottledError),
        (client_error("RequestThrottled", 403), ThrottledError),
        (client_error("AWS.SimpleQueueService.OverLimit", 403), ThrottledError),
        (client_error("KmsThrottled", 400), ThrottledError),
        (client_error("InternalError", 500), RetryableError),
        (client_error("ServiceUnavailable", 503), RetryableError),
        (client_error("SomethingNew", 502), RetryableError),
        (client_error("RequestTimeout", 400), RetryableError),
        (client_error("AccessDenied", 403), PermanentError),
        (client_error("AWS.SimpleQueueService.NonExistentQueue", 400), PermanentError),
        (client_error("QueueDoesNotExist", 400), PermanentError),
        (client_error("InvalidClientTokenId", 403), PermanentError),
        (EndpointConnectionError(endpoint_url=URL), RetryableError),
        (ConnectTimeoutError(endpoint_url=URL), RetryableError),
        (ReadTimeoutError(endpoint_url=URL), RetryableError),
        (aiohttp.ServerDisconnectedError(), RetryableError),
        (TimeoutError(), RetryableError),
        (NoCredentialsError(), PermanentError),
        (NoRegionError(), PermanentError),
    ],
)
def test_errors_map_onto_the_error_tree(error: Exception, expected: type[Exception]) -> None:
    translated = translate_sqs_error(error, "SendMessageBatch")

    assert type(translated) is expected
    assert "SendMessageBatch" in str(translated)


class FakeSqs:
    """Answers like SQS would, one canned response or error per operation."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, operation: str) -> Any:
        async def call(**kwargs: Any) -> Any:
            self.calls.append((operation, kwargs))
            answer = self.answers[operation]
            answer = answer(kwargs) if callable(answer) else answer
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call


def queue_on(fake: FakeSqs) -> SqsQueue:
    client: Any = fake
    return SqsQueue(client, URL, max_concurrent_batches=2)


async def test_publish_reports_refused_entries_and_failed_batches() -> None:
    def send(request: dict[str, Any]) -> Any:
        ids = [entry["Id"] for entry in request["Entries"]]
        if "1" in ids:  # the first batch: one entry refused
            return {"Successful": [], "Failed": [{"Id": "3", "SenderFault": False, "Code": "X"}]}
        return client_error("InternalError", 500)  # the second batch: the call fails

    fake = FakeSqs(send_message_batch=send)
    messages = [QueueMessage(email_id=i, job_id=1) for i in range(1, 16)]

    failed = await queue_on(fake).publish(messages + messages[:2])  # duplicates sent once

    assert failed == {3, *range(11, 16)}
    assert sorted(len(kwargs["Entries"]) for _, kwargs in fake.calls) == [5, 10]


async def test_delete_ignores_receipts_of_messages_already_gone() -> None:
    gone = {"Id": "0", "SenderFault": True, "Code": "ReceiptHandleIsInvalid"}
    fake = FakeSqs(delete_message_batch={"Successful": [], "Failed": [gone]})

    await queue_on(fake).delete([f"r{i}" for i in range(12)])

    assert len(fake.calls) == 2


async def test_delete_raises_when_sqs_refuses_a_receipt_for_another_reason() -> None:
    refused = {"Id": "0", "SenderFault": False, "Code": "InternalError"}
    fake = FakeSqs(delete_message_batch={"Successful": [], "Failed": [refused]})

    with pytest.raises(RetryableError, match="InternalError"):
        await queue_on(fake).delete(["r1"])


async def test_delete_raises_the_translated_error_after_trying_every_batch() -> None:
    fake = FakeSqs(delete_message_batch=client_error("ThrottlingException", 400))

    with pytest.raises(ThrottledError):
        await queue_on(fake).delete([f"r{i}" for i in range(25)])

    assert len(fake.calls) == 3


@pytest.mark.parametrize(
    "code",
    [
        "ReceiptHandleIsInvalid",
        "AWS.SimpleQueueService.MessageNotInflight",
        "InvalidParameterValue",
    ],
)
async def test_change_visibility_ignores_a_message_no_longer_in_flight(code: str) -> None:
    fake = FakeSqs(change_message_visibility=client_error(code, 400))

    await queue_on(fake).change_visibility("r1", 10)

    assert len(fake.calls) == 1


async def test_change_visibility_raises_other_errors_and_clamps_the_timeout() -> None:
    fake = FakeSqs(change_message_visibility=client_error("AccessDenied", 403))

    with pytest.raises(PermanentError):
        await queue_on(fake).change_visibility("r1", 10**6)

    assert fake.calls[0][1]["VisibilityTimeout"] == 43_200


async def test_receive_asks_within_sqs_limits_and_reads_the_receive_count() -> None:
    answer = {
        "Messages": [
            {"Body": "b", "ReceiptHandle": "r", "Attributes": {"ApproximateReceiveCount": "3"}}
        ]
    }
    fake = FakeSqs(receive_message=answer)

    [delivery] = await queue_on(fake).receive(50, wait_seconds=60.5, visibility_timeout=-1)

    assert (delivery.body, delivery.receipt, delivery.receive_count) == ("b", "r", 3)
    request = fake.calls[0][1]
    assert request["MaxNumberOfMessages"] == 10
    assert request["WaitTimeSeconds"] == 20
    assert request["VisibilityTimeout"] == 0
    assert request["MessageSystemAttributeNames"] == ["ApproximateReceiveCount"]


class FakeDirect:
    """The direct path (``aws_direct.SignedJsonClient``): scripted answers, in order."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    async def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(operation)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        result: dict[str, Any] = answer
        return result


def direct_queue(direct: FakeDirect, monkeypatch: pytest.MonkeyPatch) -> SqsQueue:
    # No backoff in tests: random() scales the delay, so 0 means no wait at all.
    monkeypatch.setattr("delivery_server.adapters.aws.sqs.random.random", lambda: 0.0)
    client: Any = FakeSqs()  # would fail the test if the client were called
    fake: Any = direct
    return SqsQueue(client, URL, max_concurrent_batches=2, direct=fake)


async def test_direct_path_repeats_transient_errors_like_the_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    direct = FakeDirect(
        client_error("InternalError", 500, "ReceiveMessage"),
        client_error("ThrottlingException", 400, "ReceiveMessage"),
        aiohttp.ServerDisconnectedError(),
        {"Messages": [{"Body": "{}", "ReceiptHandle": "r1", "Attributes": {}}]},
    )

    [delivery] = await direct_queue(direct, monkeypatch).receive(10, 0, 30)

    assert delivery.receipt == "r1"
    assert direct.calls == ["ReceiveMessage"] * 4


async def test_direct_path_gives_up_after_five_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    direct = FakeDirect(*[client_error("ServiceUnavailable", 503, "GetQueueAttributes")] * 6)

    with pytest.raises(RetryableError, match="ServiceUnavailable"):
        await direct_queue(direct, monkeypatch).backlog()
    assert len(direct.calls) == 5


async def test_direct_path_does_not_repeat_permanent_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    direct = FakeDirect(client_error("AccessDenied", 403, "GetQueueAttributes"), {})

    with pytest.raises(PermanentError, match="AccessDenied"):
        await direct_queue(direct, monkeypatch).backlog()
    assert direct.calls == ["GetQueueAttributes"]
