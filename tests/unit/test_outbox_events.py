"""The outbox plays SES's part after the send: the events of each file it writes.

Read back from the in-process events queue with ``receive``, as the tracker reads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from delivery_server.adapters.queue_local import LocalQueue
from delivery_server.adapters.sender_outbox import OutboxSender
from delivery_server.errors import RetryableError
from delivery_server.mime import CheckedEmail
from delivery_server.models import OutgoingEmail

pytestmark = pytest.mark.timeout(30)

SIMULATOR = "simulator.amazonses.com"


def statement(to: str = "ann@example.com", email_id: int | None = 42) -> CheckedEmail:
    return CheckedEmail(
        OutgoingEmail(
            from_address="Bank <statements@bank.example.com>",
            to_address=to,
            subject="Your statement",
            text_body="Attached.",
            email_id=email_id,
            job_id=7,
        )
    )


async def events_in(queue: LocalQueue) -> list[dict[str, Any]]:
    """Every event in the queue (deleted once read), in publishing order."""
    deliveries = await queue.receive(100, wait_seconds=0, visibility_timeout=60)
    await queue.delete([d.receipt for d in deliveries])
    return [json.loads(d.body) for d in deliveries]


@pytest.fixture
def events() -> LocalQueue:
    return LocalQueue()


@pytest.fixture
def outbox(tmp_path: Path, events: LocalQueue) -> OutboxSender:
    return OutboxSender(tmp_path / "outbox", events=events)


async def test_each_file_gets_a_send_and_a_delivery(
    outbox: OutboxSender, events: LocalQueue
) -> None:
    message_id = await outbox.send(statement())

    send, delivery = await events_in(events)
    # Raw message delivery: the SES event itself, no SNS envelope around it.
    assert "Type" not in send
    assert (send["eventType"], delivery["eventType"]) == ("Send", "Delivery")
    for event in (send, delivery):
        mail = event["mail"]
        assert mail["messageId"] == message_id == "outbox-7-42.eml"
        assert mail["destination"] == ["ann@example.com"]
        assert mail["tags"]["job_id"] == ["7"]
        assert mail["tags"]["email_id"] == ["42"]
        assert mail["timestamp"].endswith("Z")
    assert send["send"] == {}
    assert delivery["delivery"]["recipients"] == ["ann@example.com"]
    assert delivery["delivery"]["smtpResponse"].startswith("250 ")
    assert (outbox.directory / "7-42.eml").exists()


async def test_a_second_copy_reports_under_its_own_message_id(
    outbox: OutboxSender, events: LocalQueue
) -> None:
    first = await outbox.send(statement())
    second = await outbox.send(statement())

    ids = [event["mail"]["messageId"] for event in await events_in(events)]
    assert ids == [first, first, second, second]
    assert first != second


async def test_an_email_without_ids_has_no_id_tags(
    outbox: OutboxSender, events: LocalQueue
) -> None:
    await outbox.send(statement(email_id=None))

    tags = (await events_in(events))[0]["mail"]["tags"]
    assert "email_id" not in tags
    assert tags["job_id"] == ["7"]


@pytest.mark.parametrize(
    ("mailbox", "expected"),
    [
        ("success", [("Send", None), ("Delivery", None)]),
        ("ooto", [("Send", None), ("Delivery", None)]),  # an auto-reply is no event
        ("bounce", [("Send", None), ("Bounce", "Permanent/General")]),
        ("complaint", [("Send", None), ("Delivery", None), ("Complaint", "abuse")]),
        (
            "suppressionlist",
            [("Send", None), ("Bounce", "Permanent/OnAccountSuppressionList")],
        ),
        ("bounce+statement-7", [("Send", None), ("Bounce", "Permanent/General")]),
    ],
)
async def test_mailbox_simulator_addresses_choose_the_events(
    outbox: OutboxSender, events: LocalQueue, mailbox: str, expected: list[Any]
) -> None:
    address = f"{mailbox}@{SIMULATOR}"

    message_id = await outbox.send(statement(to=address))

    seen = []
    for event in await events_in(events):
        assert event["mail"]["messageId"] == message_id
        if event["eventType"] == "Bounce":
            bounce = event["bounce"]
            assert [r["emailAddress"] for r in bounce["bouncedRecipients"]] == [address]
            seen.append(("Bounce", f"{bounce['bounceType']}/{bounce['bounceSubType']}"))
        elif event["eventType"] == "Complaint":
            complaint = event["complaint"]
            assert complaint["complainedRecipients"] == [{"emailAddress": address}]
            seen.append(("Complaint", complaint["complaintFeedbackType"]))
        else:
            seen.append((event["eventType"], None))
    assert seen == expected


async def test_a_failed_write_reports_nothing(tmp_path: Path, events: LocalQueue) -> None:
    blocked = tmp_path / "outbox"
    blocked.write_text("a file where the directory should be")

    with pytest.raises(RetryableError):
        await OutboxSender(blocked, events=events).send(statement())

    assert await events.depth() == 0


async def test_without_a_sink_the_outbox_only_writes_files(tmp_path: Path) -> None:
    sender = OutboxSender(tmp_path / "outbox")

    assert await sender.send(statement()) == "outbox-7-42.eml"
    assert sender.events is None


async def test_raw_bodies_go_through_the_local_queue_as_sent(events: LocalQueue) -> None:
    await events.publish_bodies(['{"eventType":"Send"}', "not even JSON"])

    deliveries = await events.receive(10, wait_seconds=0, visibility_timeout=60)

    assert [d.body for d in deliveries] == ['{"eventType":"Send"}', "not even JSON"]
    assert [d.receive_count for d in deliveries] == [1, 1]
    await events.delete([d.receipt for d in deliveries])
    await events.join(timeout=5)
