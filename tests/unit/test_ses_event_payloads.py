"""The SES event payloads the outbox and the stand-in publish: pure functions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from delivery_server.adapters.ses_event_payloads import (
    AcceptedMail,
    MailboxOutcome,
    iso_timestamp,
    mailbox_simulator_outcome,
    outcome_events,
    raw_event_bodies,
    sns_notification,
)
from delivery_server.ses_record import read_record

SENT = datetime(2026, 1, 31, 23, 59, 58, 123456)  # naive UTC
LATER = SENT + timedelta(seconds=2, milliseconds=500)


def mail(*to: str) -> AcceptedMail:
    return AcceptedMail(
        message_id="0100-abc-000000",
        source="statements@bank.example.com",
        destination=to,
        sent_at=SENT,
        tags={"job_id": "7", "email_id": "42"},
        configuration_set="tracking",
    )


@pytest.mark.parametrize(
    ("address", "outcome"),
    [
        ("success@simulator.amazonses.com", MailboxOutcome.DELIVERED),
        ("ooto@simulator.amazonses.com", MailboxOutcome.DELIVERED),
        ("bounce@simulator.amazonses.com", MailboxOutcome.BOUNCED),
        ("Bounce+job-7@Simulator.AmazonSES.com", MailboxOutcome.BOUNCED),
        ("complaint@simulator.amazonses.com", MailboxOutcome.COMPLAINED),
        ("suppressionlist@simulator.amazonses.com", MailboxOutcome.SUPPRESSED),
        ("bounce@example.com", MailboxOutcome.DELIVERED),
        ("nobody@simulator.amazonses.com", MailboxOutcome.DELIVERED),
        ("not an address", MailboxOutcome.DELIVERED),
    ],
)
def test_mailbox_simulator_outcome(address: str, outcome: MailboxOutcome) -> None:
    assert mailbox_simulator_outcome(address) is outcome


def test_timestamps_are_utc_with_milliseconds() -> None:
    paris = timezone(timedelta(hours=1))

    assert iso_timestamp(SENT) == "2026-01-31T23:59:58.123Z"
    assert iso_timestamp(SENT.replace(tzinfo=UTC)) == "2026-01-31T23:59:58.123Z"
    assert iso_timestamp(datetime(2026, 2, 1, 0, 59, 58, 123999, paris)) == (
        "2026-01-31T23:59:58.123Z"
    )


def test_a_delivered_email_reports_send_then_delivery() -> None:
    send, delivery = outcome_events(mail("ann@example.com"), LATER)

    assert send == {"eventType": "Send", "mail": send["mail"], "send": {}}
    common = send["mail"]
    assert common["messageId"] == "0100-abc-000000"
    assert common["timestamp"] == "2026-01-31T23:59:58.123Z"
    assert common["destination"] == ["ann@example.com"]
    assert common["sendingAccountId"]
    assert common["tags"] == {
        "job_id": ["7"],
        "email_id": ["42"],
        "ses:from-domain": ["bank.example.com"],
        "ses:configuration-set": ["tracking"],
    }
    assert delivery["delivery"]["timestamp"] == "2026-02-01T00:00:00.623Z"
    assert delivery["delivery"]["processingTimeMillis"] == 2500
    assert delivery["delivery"]["recipients"] == ["ann@example.com"]


def test_each_recipient_gets_its_own_outcome() -> None:
    bounce, complaint, suppressed = (
        f"{box}@simulator.amazonses.com" for box in ("bounce", "complaint", "suppressionlist")
    )
    events = outcome_events(mail("ann@example.com", bounce, complaint, suppressed), LATER)

    kinds = [event["eventType"] for event in events]
    assert kinds == ["Send", "Bounce", "Delivery", "Bounce", "Complaint"]
    on_list, delivered, bounced, complained = events[1:]
    assert on_list["bounce"]["bounceSubType"] == "OnAccountSuppressionList"
    assert on_list["bounce"]["timestamp"] == iso_timestamp(SENT)  # SES never tried
    assert delivered["delivery"]["recipients"] == ["ann@example.com", complaint]
    assert bounced["bounce"]["bounceType"] == "Permanent"
    assert bounced["bounce"]["bounceSubType"] == "General"
    assert [r["emailAddress"] for r in bounced["bounce"]["bouncedRecipients"]] == [bounce]
    assert complained["complaint"]["complaintFeedbackType"] == "abuse"
    assert complained["complaint"]["complainedRecipients"] == [{"emailAddress": complaint}]


def test_bounce_all_turns_deliveries_into_permanent_bounces() -> None:
    suppressed = "suppressionlist@simulator.amazonses.com"
    events = outcome_events(mail("ann@example.com", suppressed), LATER, bounce_all=True)

    subtypes = [e["bounce"]["bounceSubType"] for e in events if e["eventType"] == "Bounce"]
    assert [e["eventType"] for e in events] == ["Send", "Bounce", "Bounce"]
    assert subtypes == ["OnAccountSuppressionList", "General"]


BOUNCE = "bounce@simulator.amazonses.com"


def test_an_opened_email_reports_an_open_after_its_delivery_and_the_tracker_reads_it() -> None:
    events = outcome_events(mail("ann@example.com", "bounce@simulator.amazonses.com"), LATER)
    opened = outcome_events(
        mail("ann@example.com", "bounce@simulator.amazonses.com"), LATER, opened=True
    )

    assert [e["eventType"] for e in events] == ["Send", "Delivery", "Bounce"]
    assert [e["eventType"] for e in opened] == ["Send", "Delivery", "Open", "Bounce"]
    record = read_record(opened[2])
    assert (record.event_type, record.email_id, record.job_id) == ("Open", 42, 7)
    assert record.occurred_at == LATER.replace(microsecond=623000)  # SES: milliseconds
    # Nobody is opened who was not delivered.
    assert [e["eventType"] for e in outcome_events(mail(BOUNCE), LATER, opened=True)] == [
        "Send",
        "Bounce",
    ]


def test_raw_bodies_are_the_events_themselves() -> None:
    events = outcome_events(mail("ann@example.com"), LATER)

    assert [json.loads(body) for body in raw_event_bodies(events)] == events


def test_sns_notification_wraps_the_event_text() -> None:
    [body] = raw_event_bodies(outcome_events(mail("bounce@simulator.amazonses.com"), LATER)[1:])
    topic = "arn:aws:sns:eu-west-1:123456789012:ses-events"

    notification = sns_notification(body, topic, "mid-1", LATER, "c2lnbg==")

    assert notification["Type"] == "Notification"
    assert (notification["TopicArn"], notification["MessageId"]) == (topic, "mid-1")
    assert notification["Message"] == body
    assert notification["Timestamp"] == "2026-02-01T00:00:00.623Z"
    assert (notification["SignatureVersion"], notification["Signature"]) == ("1", "c2lnbg==")
    assert notification["SigningCertURL"].startswith("https://sns.eu-west-1.amazonaws.com/")
