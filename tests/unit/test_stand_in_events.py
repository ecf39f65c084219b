"""The stand-in's SES event publishing: sends through its SES API, events from its SQS.

What the tracker will read: SNS notification envelopes around SES events shaped like
AWS's examples, tagged with the send's ids, with the mailbox simulator's outcomes and a
seeded bounce rate. Waits are the stand-in's own long polls, never sleeps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import HTTPClientError

from stand_in import FaultPlan, FaultRule, Simulator, start_simulator
from tests.conftest import AWS_REGION
from tests.support import simulator as simulator_support

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
SIMULATOR = "simulator.amazonses.com"
NO_RETRIES = AioConfig(retries={"mode": "standard", "total_max_attempts": 1})

# The fixture from tests.support, registered in this module under its own name.
events_simulator = simulator_support.events_simulator


def client_kwargs(sim: Simulator) -> dict[str, Any]:
    return {
        "endpoint_url": sim.endpoint_url,
        "region_name": AWS_REGION,
        "aws_access_key_id": "any",
        "aws_secret_access_key": "thing",
        "config": NO_RETRIES,
    }


@pytest.fixture
async def clients(events_simulator: Simulator) -> AsyncIterator[tuple[Any, Any]]:
    session = get_session()
    kwargs = client_kwargs(events_simulator)
    async with (
        session.create_client("sqs", **kwargs) as sqs,
        session.create_client("sesv2", **kwargs) as ses,
    ):
        yield sqs, ses


def statement(to: str, email_id: int = 42, **extra: Any) -> dict[str, Any]:
    return {
        "FromEmailAddress": "statements@bank.example.com",
        "Destination": {"ToAddresses": [to]},
        "Content": {
            "Simple": {
                "Subject": {"Data": "Your statement"},
                "Body": {"Text": {"Data": "Attached."}},
            }
        },
        "EmailTags": [
            {"Name": "job_id", "Value": "7"},
            {"Name": "email_id", "Value": str(email_id)},
        ],
        **extra,
    }


async def collect(sqs: Any, url: str, count: int) -> list[dict[str, Any]]:
    """Receive (and delete) ``count`` notifications from ``url``, in arrival order."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        response = await sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5, VisibilityTimeout=300
        )
        messages = response.get("Messages", [])
        for message in messages:
            found.append(json.loads(message["Body"]))
            await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return found


def ses_events(notifications: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(n["Message"]) for n in notifications]


async def test_an_accepted_send_publishes_send_and_delivery_envelopes(
    clients: tuple[Any, Any], events_simulator: Simulator
) -> None:
    sqs, ses = clients
    url = events_simulator.events_queue_url
    assert url is not None

    sent = await ses.send_email(**statement("ann@example.com", ConfigurationSetName="tracking"))

    notifications = await collect(sqs, url, 2)
    for notification in notifications:
        assert notification["Type"] == "Notification"
        assert notification["TopicArn"].startswith("arn:aws:sns:")
        assert notification["SignatureVersion"] == "1"
        assert notification["Signature"]
        assert notification["SigningCertURL"].startswith("https://sns.")
        assert notification["Timestamp"].endswith("Z")
        assert notification["MessageId"]
    send, delivery = ses_events(notifications)
    assert (send["eventType"], delivery["eventType"]) == ("Send", "Delivery")
    for event in (send, delivery):
        mail = event["mail"]
        assert mail["messageId"] == sent["MessageId"]
        assert mail["destination"] == ["ann@example.com"]
        assert mail["source"] == "statements@bank.example.com"
        assert mail["tags"]["job_id"] == ["7"]
        assert mail["tags"]["email_id"] == ["42"]
        assert mail["tags"]["ses:configuration-set"] == ["tracking"]
        assert mail["timestamp"].endswith("Z")
    assert delivery["delivery"]["recipients"] == ["ann@example.com"]
    assert delivery["delivery"]["timestamp"] >= send["mail"]["timestamp"]
    assert (await sqs.get_queue_url(QueueName="ses-events"))["QueueUrl"] == url


async def test_mailbox_simulator_addresses_choose_the_outcome(
    clients: tuple[Any, Any], events_simulator: Simulator
) -> None:
    sqs, ses = clients
    url = events_simulator.events_queue_url
    expected = {
        "success": ["Send", "Delivery"],
        "ooto": ["Send", "Delivery"],  # an auto-reply is not an event
        "bounce": ["Send", "Bounce Permanent/General"],
        "complaint": ["Send", "Delivery", "Complaint abuse"],
        "suppressionlist": ["Send", "Bounce Permanent/OnAccountSuppressionList"],
    }
    ids = {}
    for n, mailbox in enumerate(expected):
        ids[mailbox] = (await ses.send_email(**statement(f"{mailbox}@{SIMULATOR}", n)))["MessageId"]

    events = ses_events(await collect(sqs, url, sum(map(len, expected.values()))))
    seen: dict[str, list[str]] = {}
    for event in events:
        kind = event["eventType"]
        if kind == "Bounce":
            kind += f" {event['bounce']['bounceType']}/{event['bounce']['bounceSubType']}"
        elif kind == "Complaint":
            kind += f" {event['complaint']['complaintFeedbackType']}"
        seen.setdefault(event["mail"]["messageId"], []).append(kind)
    assert seen == {ids[mailbox]: kinds for mailbox, kinds in expected.items()}
    assert events_simulator.stats()["events"]["Bounce"] == 2


async def test_a_dropped_answer_still_reports_what_ses_accepted(
    clients: tuple[Any, Any], events_simulator: Simulator
) -> None:
    # The unknown window: the client never hears, yet the email went out and SES says so.
    sqs, ses = clients
    events_simulator.set_faults(FaultPlan(latency=0, rules=[FaultRule(error="drop")]))

    with pytest.raises(HTTPClientError):  # the connection is cut before the answer
        await ses.send_email(**statement("ann@example.com", 9))

    send, _ = ses_events(await collect(sqs, events_simulator.events_queue_url, 2))
    assert send["mail"]["messageId"] == events_simulator.sent.records[-1].message_id
    assert send["mail"]["tags"]["email_id"] == ["9"]


async def outcome_positions(
    bounce_rate: float, seed: int, emails: int, open_rate: float = 0.0
) -> tuple[list[int], list[int]]:
    """Which of ``emails`` sends (by order) a stand-in with this seed bounced, and which
    it reported opened."""
    plan = FaultPlan(latency=0, seed=seed)
    async with (
        await start_simulator(
            faults=plan, events_queue="ev", bounce_rate=bounce_rate, open_rate=open_rate
        ) as sim,
        get_session().create_client("sesv2", **client_kwargs(sim)) as ses,
    ):
        order = [
            (await ses.send_email(**statement(f"c{n}@example.com", n + 1)))["MessageId"]
            for n in range(emails)
        ]
        assert sim.events is not None
        sim.events.flush()
        queue = sim.queue("ev")
        bounced, opened = set(), set()
        while taken := queue.take(10, 300):
            for message, _ in taken:
                event = json.loads(json.loads(message.body)["Message"])
                if event["eventType"] == "Bounce":
                    assert event["bounce"]["bounceType"] == "Permanent"
                    bounced.add(event["mail"]["messageId"])
                if event["eventType"] == "Open":
                    opened.add(event["mail"]["messageId"])
        assert sim.stats()["events"]["bounced_by_rate"] == len(bounced)
        assert sim.stats()["events"].get("Open", 0) == len(opened)
        return (
            [n for n, message_id in enumerate(order) if message_id in bounced],
            [n for n, message_id in enumerate(order) if message_id in opened],
        )


async def bounced_positions(bounce_rate: float, seed: int, emails: int) -> list[int]:
    """Which of ``emails`` sends (by order) a stand-in with this seed bounced."""
    bounced, _ = await outcome_positions(bounce_rate, seed, emails)
    return bounced


async def test_bounce_rate_bounces_that_fraction_the_same_way_for_a_seed() -> None:
    first = await bounced_positions(0.1, seed=11, emails=300)
    again = await bounced_positions(0.1, seed=11, emails=300)

    assert first == again
    assert 15 <= len(first) <= 45  # 10 % of 300, well within what a seed can draw


async def test_an_open_rate_opens_that_fraction_of_deliveries_and_moves_no_bounce() -> None:
    bounced, opened = await outcome_positions(0.1, seed=11, emails=300, open_rate=0.5)
    every_one_opened = await outcome_positions(0.1, seed=11, emails=300, open_rate=1.0)

    assert bounced == await bounced_positions(0.1, seed=11, emails=300)
    assert not set(bounced) & set(opened)  # a bounced email is never opened
    assert 100 <= len(opened) <= 170  # half of the ~270 delivered
    assert every_one_opened == (bounced, sorted(set(range(300)) - set(bounced)))


async def test_without_an_events_queue_nothing_is_published(aws_env: None) -> None:
    async with (
        await start_simulator(ses_latency=0) as sim,
        get_session().create_client("sesv2", **client_kwargs(sim)) as ses,
    ):
        await ses.send_email(**statement("ann@example.com"))

        assert sim.sent.count == 1
        assert (sim.events, sim.events_queue_url) == (None, None)
        assert sim.sqs.queues == {}
        assert "events" not in sim.stats()


async def test_reset_recreates_the_events_queue(
    clients: tuple[Any, Any], events_simulator: Simulator
) -> None:
    sqs, ses = clients
    await ses.send_email(**statement("ann@example.com"))
    assert events_simulator.events is not None
    events_simulator.events.flush()

    events_simulator.reset()

    assert events_simulator.queue("ses-events").counts() == (0, 0, 0)
    assert events_simulator.stats()["events"] == {}
    await ses.send_email(**statement("bob@example.com"))
    send, _ = ses_events(await collect(sqs, events_simulator.events_queue_url, 2))
    assert send["mail"]["destination"] == ["bob@example.com"]


async def test_bad_events_options_are_refused() -> None:
    with pytest.raises(ValueError, match="bounce rate"):
        await start_simulator(events_queue="ev", bounce_rate=1.5)
    with pytest.raises(ValueError, match="needs an events queue"):
        await start_simulator(bounce_rate=0.01)
    with pytest.raises(ValueError, match="events queue name"):
        await start_simulator(events_queue="no spaces")


def test_command_line_publishes_events_with_a_bounce_rate() -> None:
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "stand_in", "--port", "0", "--ses-latency", "0"),
            *("--events-queue", "ses-events", "--bounce-rate", "1", "--seed", "3"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().split()[-1]
        send = urllib.request.Request(
            f"{endpoint}/v2/email/outbound-emails",
            data=json.dumps(statement("ann@example.com")).encode(),
            method="POST",
        )
        with urllib.request.urlopen(send, timeout=10) as response:
            message_id = json.loads(response.read())["MessageId"]
        events: list[dict[str, Any]] = []
        while len(events) < 2:
            events += [json.loads(n["Message"]) for n in _receive(endpoint, "ses-events")]
        assert [e["eventType"] for e in events] == ["Send", "Bounce"]
        assert {e["mail"]["messageId"] for e in events} == {message_id}
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def _receive(endpoint: str, queue: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        endpoint,
        data=json.dumps(
            {"QueueUrl": f"{endpoint}/000000000000/{queue}", "MaxNumberOfMessages": 10}
            | {"WaitTimeSeconds": 5}
        ).encode(),
        headers={"X-Amz-Target": "AmazonSQS.ReceiveMessage"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return [json.loads(m["Body"]) for m in json.loads(response.read()).get("Messages", [])]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--bounce-rate", "0.01"], "needs an events queue"),
        (["--events-queue", "ev", "--bounce-rate", "2"], "must be between 0 and 1"),
        (["--open-rate", "0.5"], "needs an events queue"),
        (["--events-queue", "ev", "--open-rate", "-1"], "open rate -1.0 must be between"),
    ],
)
def test_bad_events_flags_exit_2(flags: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stand_in", *flags],
        capture_output=True,
        cwd=REPO,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
