"""The AWS stand-in, spoken to through aiobotocore as the product and the bench speak to it.

Waits are the simulator's own long polls (which wake on send and on visibility expiry),
never sleeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from stand_in import FaultPlan, FaultRule, Simulator
from stand_in.sqs_queue import SimQueue
from tests.conftest import AWS_REGION
from tests.support.simulator import simulator  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(60)

# One attempt per call: the tests look at what the simulator answered, not at retries.
REPO = Path(__file__).resolve().parents[2]
NO_RETRIES = AioConfig(retries={"mode": "standard", "total_max_attempts": 1})


@pytest.fixture
async def clients(simulator: Simulator) -> AsyncIterator[tuple[Any, Any]]:  # noqa: F811
    session = get_session()
    kwargs: dict[str, Any] = {
        "endpoint_url": simulator.endpoint_url,
        "region_name": AWS_REGION,
        "aws_access_key_id": "any",
        "aws_secret_access_key": "thing",
        "config": NO_RETRIES,
    }
    async with (
        session.create_client("sqs", **kwargs) as sqs,
        session.create_client("sesv2", **kwargs) as ses,
    ):
        yield sqs, ses


@pytest.fixture
def sqs(clients: tuple[Any, Any]) -> Any:
    return clients[0]


@pytest.fixture
def ses(clients: tuple[Any, Any]) -> Any:
    return clients[1]


@pytest.fixture
async def queue_url(sqs: Any) -> str:
    response = await sqs.create_queue(QueueName="sim-test")
    return str(response["QueueUrl"])


async def receive(sqs: Any, url: str, wait: int = 5, visibility: int = 300) -> list[Any]:
    response = await sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=wait,
        VisibilityTimeout=visibility,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )
    return list(response.get("Messages", []))


def simple_email(to: str = "ann@example.com", subject: str = "Hello") -> dict[str, Any]:
    return {
        "FromEmailAddress": "bank@example.com",
        "Destination": {"ToAddresses": [to]},
        "Content": {
            "Simple": {
                "Subject": {"Data": subject},
                "Body": {"Text": {"Data": "text"}, "Html": {"Data": "<p>html</p>"}},
            }
        },
    }


async def control(sim: Simulator, path: str, payload: Any = None) -> Any:
    """Call the control API (asynchronously: the simulator runs in this event loop)."""
    async with aiohttp.ClientSession() as http:
        if payload is None:
            async with http.get(f"{sim.endpoint_url}{path}") as response:
                return await response.json()
        async with http.post(f"{sim.endpoint_url}{path}", json=payload) as response:
            return await response.json()


# -- SQS -----------------------------------------------------------------------------------


async def test_send_receive_delete(sqs: Any, queue_url: str) -> None:
    body = '{"v": 1, "email_id": 1, "job_id": 2}'
    sent = await sqs.send_message_batch(
        QueueUrl=queue_url,
        Entries=[{"Id": "a", "MessageBody": body}, {"Id": "b", "MessageBody": "second"}],
    )
    assert [e["Id"] for e in sent["Successful"]] == ["a", "b"]
    assert (
        sent["Successful"][0]["MD5OfMessageBody"]
        == hashlib.md5(body.encode(), usedforsecurity=False).hexdigest()
    )

    got = await receive(sqs, queue_url)

    assert [m["Body"] for m in got] == [body, "second"]
    assert got[0]["MD5OfBody"] == hashlib.md5(body.encode(), usedforsecurity=False).hexdigest()
    assert got[0]["Attributes"] == {"ApproximateReceiveCount": "1"}
    deleted = await sqs.delete_message_batch(
        QueueUrl=queue_url,
        Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)],
    )
    assert len(deleted["Successful"]) == 2
    assert deleted["Failed"] == []
    attributes = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"
    assert attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "0"


async def test_visibility_timeout_redelivers_with_receive_count_2(sqs: Any, queue_url: str) -> None:
    await sqs.send_message(QueueUrl=queue_url, MessageBody="m")
    [first] = await receive(sqs, queue_url, visibility=1)
    attributes = await sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    assert attributes["Attributes"] == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "1",
    }
    started = time.monotonic()

    # The long poll is woken by the visibility expiry, not by a poll interval.
    [again] = await receive(sqs, queue_url, wait=10)

    assert 0.5 <= time.monotonic() - started < 5
    assert again["MessageId"] == first["MessageId"]
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"
    assert again["ReceiptHandle"] != first["ReceiptHandle"]


async def test_change_visibility_zero_shows_the_message_at_once(sqs: Any, queue_url: str) -> None:
    await sqs.send_message(QueueUrl=queue_url, MessageBody="m")
    [first] = await receive(sqs, queue_url)
    assert await receive(sqs, queue_url, wait=0) == []

    await sqs.change_message_visibility(
        QueueUrl=queue_url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0
    )

    [again] = await receive(sqs, queue_url, wait=0)
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"


async def test_stale_receipt_is_rejected_like_sqs(sqs: Any, queue_url: str) -> None:
    await sqs.send_message(QueueUrl=queue_url, MessageBody="m")
    [first] = await receive(sqs, queue_url, visibility=0)
    [second] = await receive(sqs, queue_url)

    with pytest.raises(ClientError) as raised:
        await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=first["ReceiptHandle"])
    assert raised.value.response["Error"]["Code"] == "ReceiptHandleIsInvalid"
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        await sqs.change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=5
        )
    batch = await sqs.delete_message_batch(
        QueueUrl=queue_url,
        Entries=[
            {"Id": "old", "ReceiptHandle": first["ReceiptHandle"]},
            {"Id": "new", "ReceiptHandle": second["ReceiptHandle"]},
        ],
    )
    assert [e["Id"] for e in batch["Successful"]] == ["new"]
    assert [(e["Id"], e["Code"]) for e in batch["Failed"]] == [("old", "ReceiptHandleIsInvalid")]


async def test_missing_queue_is_the_modeled_error(sqs: Any) -> None:
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as raised:
        await sqs.get_queue_url(QueueName="nope")
    assert raised.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"


async def test_long_poll_returns_early_on_send(sqs: Any, queue_url: str) -> None:
    waiting = asyncio.create_task(receive(sqs, queue_url, wait=20))
    assert await receive(sqs, queue_url, wait=1) == []  # the first poll is parked by now
    assert not waiting.done()
    sent_at = time.monotonic()

    await sqs.send_message(QueueUrl=queue_url, MessageBody="wake up")

    got = await asyncio.wait_for(waiting, timeout=10)
    assert [m["Body"] for m in got] == ["wake up"]
    assert time.monotonic() - sent_at < 2


async def test_bad_batch_entries_fail_alone(sqs: Any, queue_url: str) -> None:
    result = await sqs.send_message_batch(
        QueueUrl=queue_url,
        Entries=[
            {"Id": "ok", "MessageBody": "m"},
            {"Id": "late", "MessageBody": "m", "DelaySeconds": 901},
        ],
    )
    assert [e["Id"] for e in result["Successful"]] == ["ok"]
    assert [(e["Id"], e["SenderFault"]) for e in result["Failed"]] == [("late", True)]


async def test_purge_forgets_messages_and_receipts(sqs: Any, queue_url: str) -> None:
    await sqs.send_message(QueueUrl=queue_url, MessageBody="a")
    await sqs.send_message(QueueUrl=queue_url, MessageBody="b")
    [held, *_] = await receive(sqs, queue_url)

    await sqs.purge_queue(QueueUrl=queue_url)

    assert await receive(sqs, queue_url, wait=0) == []
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=held["ReceiptHandle"])


async def test_queue_keeps_order_across_many_visibility_deadlines() -> None:
    now = [0.0]
    queue = SimQueue("q", clock=lambda: now[0])
    for i in range(100):
        queue.send(str(i))
    held = queue.take(10, 5) + queue.take(10, 1)  # 0-9 back at t=5, 10-19 at t=1
    assert queue.counts() == (80, 20, 0)

    now[0] = 1.0
    assert queue.counts() == (90, 10, 0)
    queue.delete(held[0][1])
    now[0] = 5.0
    assert queue.counts() == (99, 0, 0)
    bodies = [msg.body for msg, _ in queue.take(10, 30)]
    assert bodies == [str(i) for i in range(20, 30)]


# -- SES v2 --------------------------------------------------------------------------------


async def test_simple_send_is_recorded(ses: Any, simulator: Simulator) -> None:  # noqa: F811
    response = await ses.send_email(
        **simple_email(), EmailTags=[{"Name": "email_id", "Value": "17"}]
    )

    assert response["MessageId"]
    [record] = simulator.sent.records
    assert record.message_id == response["MessageId"]
    assert (record.from_address, record.to, record.subject) == (
        "bank@example.com",
        ("ann@example.com",),
        "Hello",
    )
    assert (record.kind, record.tags) == ("simple", {"email_id": "17"})
    assert (await control(simulator, "/_sim/sent"))["count"] == 1


async def test_sent_log_keeps_first_and_last_accept_times_beyond_keep(
    ses: Any,
    simulator: Simulator,  # noqa: F811
) -> None:
    simulator.sent.records = type(simulator.sent.records)(maxlen=1)  # keep only the last
    before = time.time()

    for n in range(3):
        await ses.send_email(**simple_email(to=f"c{n}@example.com"))

    sent = await control(simulator, "/_sim/sent")
    assert sent["count"] == 3
    assert before <= sent["first_accepted_at"] <= sent["last_accepted_at"] <= time.time()
    assert sent["last_accepted_at"] == simulator.sent.records[-1].accepted_at
    await control(simulator, "/_sim/reset", {})
    assert (await control(simulator, "/_sim/sent"))["first_accepted_at"] is None


async def test_raw_send_is_recorded_from_its_headers(ses: Any, simulator: Simulator) -> None:  # noqa: F811
    message = EmailMessage()
    message["From"] = "bank@example.com"
    message["To"] = "Zoë <zoe@example.com>"
    message["Subject"] = "Relevé annuel"
    message.set_content("see attached")
    message.add_attachment(b"%PDF-1.4 " + b"x" * 50_000, "application", "pdf", filename="s.pdf")
    data = message.as_bytes()

    await ses.send_email(Content={"Raw": {"Data": data}})

    [record] = simulator.sent.records
    assert (record.kind, record.size, record.attachments) == ("raw", len(data), 1)
    assert record.to == ("zoe@example.com",)
    assert record.subject == "Relevé annuel"
    listed = await control(simulator, "/_sim/sent?list=1")
    assert listed["emails"][0]["message_id"] == record.message_id


async def test_latency_is_applied_to_each_send(ses: Any, simulator: Simulator) -> None:  # noqa: F811
    simulator.set_faults(FaultPlan(latency=0.3))
    started = time.monotonic()

    await ses.send_email(**simple_email())

    assert time.monotonic() - started >= 0.3


async def test_injected_throttle_is_a_429_client_error(ses: Any, simulator: Simulator) -> None:  # noqa: F811
    simulator.set_faults(FaultPlan(latency=0, rules=[FaultRule.from_cli("throttle,match=^slow@")]))

    with pytest.raises(ClientError) as raised:
        await ses.send_email(**simple_email(to="slow@example.com"))
    await ses.send_email(**simple_email(to="fast@example.com"))

    assert raised.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert isinstance(raised.value, ses.exceptions.TooManyRequestsException)
    assert [r.to for r in simulator.sent.records] == [("fast@example.com",)]


async def test_faults_set_over_http_count_down(ses: Any, simulator: Simulator) -> None:  # noqa: F811
    plan = await control(
        simulator, "/_sim/faults", {"latency": 0, "rules": [{"error": "reject", "count": 1}]}
    )
    assert plan["rules"][0]["error"] == "MessageRejected"

    with pytest.raises(ses.exceptions.MessageRejected):
        await ses.send_email(**simple_email())
    await ses.send_email(**simple_email())  # the rule fired its one time

    assert simulator.sent.count == 1
    stats = await control(simulator, "/_sim/stats")
    assert stats["ses"]["SendEmail:MessageRejected"] == 1
    await control(simulator, "/_sim/reset", {})
    assert (await control(simulator, "/_sim/sent"))["count"] == 0


async def test_server_error_is_a_500(ses: Any, simulator: Simulator) -> None:  # noqa: F811
    simulator.set_faults(FaultPlan(latency=0, rules=[FaultRule(error="InternalFailure")]))

    with pytest.raises(ClientError) as raised:
        await ses.send_email(**simple_email())

    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert simulator.sent.count == 0


async def test_drop_accepts_the_email_but_never_answers(ses: Any, simulator: Simulator) -> None:  # noqa: F811
    simulator.set_faults(FaultPlan(latency=0, rules=[FaultRule(error="drop")]))

    with pytest.raises(Exception) as raised:  # noqa: PT011 - transport errors vary by version
        await ses.send_email(**simple_email())

    assert not isinstance(raised.value, ClientError)
    assert simulator.sent.count == 1


async def test_get_account_reports_max_send_rate(ses: Any, simulator: Simulator) -> None:  # noqa: F811
    simulator.set_faults(FaultPlan(max_send_rate=321.0))

    account = await ses.get_account()

    assert account["SendQuota"]["MaxSendRate"] == 321.0


async def test_enforced_send_rate_throttles_the_excess(ses: Any, simulator: Simulator) -> None:  # noqa: F811
    simulator.set_faults(FaultPlan(latency=0, max_send_rate=2.0, enforce_rate=True))
    outcomes = []
    for _ in range(4):
        try:
            await ses.send_email(**simple_email())
            outcomes.append("sent")
        except ses.exceptions.TooManyRequestsException:
            outcomes.append("throttled")

    # The bucket holds one second of the rate; four quick sends overflow it.
    assert outcomes.count("sent") >= 2
    assert "throttled" in outcomes


async def test_bad_simple_content_is_a_bad_request(ses: Any) -> None:
    request = simple_email()
    request["Destination"] = {"ToAddresses": []}

    with pytest.raises(ses.exceptions.BadRequestException):
        await ses.send_email(**request)


# -- as a process --------------------------------------------------------------------------


def test_command_line_serves_until_terminated() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stand_in", "--port", "0", "--fault", "reject"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once it accepts connections
        assert line.startswith("simulator listening on http://127.0.0.1:")
        endpoint = line.split()[-1]
        with urllib.request.urlopen(f"{endpoint}/_sim/faults", timeout=10) as response:
            assert json.loads(response.read())["rules"][0]["error"] == "MessageRejected"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_bad_fault_flag_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stand_in", "--fault", "nonsense"],
        capture_output=True,
        cwd=REPO,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown error 'nonsense'" in result.stderr
