"""SES events read from all three envelopes, and the status rules (tracking, ses_record)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from delivery_server.errors import MalformedEventError, PermanentError
from delivery_server.models import DeliveryStatus, TrackingEvent
from delivery_server.tracking import (
    MAX_EVENT_BYTES,
    delivery_detail,
    delivery_status_for,
    is_permanent_bounce,
    moves_forward,
    parse_event_message,
    resolves_unknown,
)
from tests.support import ses_events as ses
from tests.support.ses_events import ENVELOPES, RECIPIENT, SENT_AT, SUBJECT, Event

S = timedelta(seconds=1)


def _transient(message_id: str = ses.MESSAGE_ID, **mail: Any) -> Event:
    return ses.bounce_event(message_id, bounce_type="Transient", **mail)


# builder, event type, occurred at, delivery status, bounce type
CASES: dict[str, tuple[Callable[..., Event], str, datetime, DeliveryStatus | None, str | None]] = {
    "send": (ses.send_event, "Send", SENT_AT, None, None),
    "delivery": (ses.delivery_event, "Delivery", SENT_AT + 12 * S, DeliveryStatus.DELIVERED, None),
    "bounce": (ses.bounce_event, "Bounce", SENT_AT + 60 * S, DeliveryStatus.BOUNCED, "Permanent"),
    "soft-bounce": (_transient, "Bounce", SENT_AT + 60 * S, DeliveryStatus.BOUNCED, "Transient"),
    "complaint": (
        ses.complaint_event,
        "Complaint",
        SENT_AT + 3600 * S,
        DeliveryStatus.COMPLAINED,
        None,
    ),
    "delay": (
        ses.delivery_delay_event,
        "DeliveryDelay",
        SENT_AT + 600 * S,
        DeliveryStatus.DELAYED,
        None,
    ),
    "reject": (ses.reject_event, "Reject", SENT_AT, DeliveryStatus.REJECTED, None),
    "open": (ses.open_event, "Open", SENT_AT + 1800 * S, None, None),
    "click": (ses.click_event, "Click", SENT_AT + 2400 * S, None, None),
}


@pytest.mark.parametrize("envelope", sorted(ENVELOPES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_each_event_type_reads_the_same_in_every_envelope(case: str, envelope: str) -> None:
    build, event_type, occurred_at, status, bounce_type = CASES[case]
    body = ENVELOPES[envelope](build("ses-message-1", email_id=123, job_id=7))

    event = parse_event_message(body)

    assert event.event_type == event_type
    assert event.provider_message_id == "ses-message-1"
    assert (event.email_id, event.job_id) == (123, 7)
    assert event.occurred_at == occurred_at
    assert event.occurred_at.tzinfo is None
    assert event.recipients == (RECIPIENT,)
    assert event.bounce_type == bounce_type
    assert delivery_status_for(event) == status
    stored = json.dumps(event.detail)
    assert RECIPIENT not in stored
    assert SUBJECT not in stored
    assert "192.0.2.1" not in stored  # the opener's / clicker's IP address


def test_detail_keeps_the_bounce_facts_without_the_address() -> None:
    event = parse_event_message(ses.raw_message(ses.bounce_event()))

    assert event.detail["bounceType"] == "Permanent"
    assert event.detail["bounceSubType"] == "General"
    assert event.detail["reportingMTA"] == "dsn; mta.example.com"
    assert event.detail["bouncedRecipients"] == [
        {
            "action": "failed",
            "status": "5.1.1",
            "diagnosticCode": "smtp; 550 5.1.1 <address>... User unknown",
        }
    ]


def test_detail_of_the_other_types() -> None:
    def detail(event: Event) -> dict[str, Any]:
        return parse_event_message(ses.raw_message(event)).detail

    assert detail(ses.delivery_event()) == {
        "processingTimeMillis": 11893,
        "smtpResponse": "250 2.6.0 <address> Message received",
        "reportingMTA": "mta.example.com",
    }
    complaint = detail(ses.complaint_event())
    assert complaint["complaintFeedbackType"] == "abuse"
    assert "complainedRecipients" not in complaint  # it had nothing but the address
    delay = detail(ses.delivery_delay_event())
    assert delay["delayType"] == "TransientCommunicationFailure"
    assert delay["delayedRecipients"] == [
        {"status": "4.4.1", "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host"}
    ]
    assert detail(ses.reject_event()) == {"reason": "Bad content"}
    assert detail(ses.open_event())["userAgent"].startswith("Mozilla/5.0 (iPhone")
    assert detail(ses.send_event()) == {}


def test_long_free_text_is_cut_and_still_has_no_address() -> None:
    event = ses.bounce_event()
    facts = event["bounce"]["bouncedRecipients"][0]
    facts["diagnosticCode"] = "x" * 200_000  # one long word: no quadratic search over it
    event["bounce"]["reportingMTA"] = "y" * 488 + " " + RECIPIENT  # cut just after the "@"

    detail = parse_event_message(ses.raw_message(event)).detail

    assert len(detail["bouncedRecipients"][0]["diagnosticCode"]) == 500
    assert detail["reportingMTA"] == "y" * 488 + " <address>"


def test_numbers_json_cannot_store_are_left_out() -> None:
    body = ses.raw_message(ses.delivery_event()).replace("11893", "NaN")
    huge = ses.raw_message(ses.delivery_event()).replace("11893", "1" + "0" * 400)

    assert "processingTimeMillis" not in parse_event_message(body).detail
    assert "processingTimeMillis" not in parse_event_message(huge).detail


def test_a_clicked_link_keeps_scheme_host_and_path_only() -> None:
    link = "https://user:pw@Statements.Example.com:8443/2017/view.html?customer=x#top"
    event = parse_event_message(ses.raw_message(ses.click_event(link=link)))

    assert event.detail["link"] == "https://statements.example.com:8443/2017/view.html"
    assert parse_event_message(ses.raw_message(ses.click_event())).detail["link"] == (
        "https://statements.example.com/2017/view.html"
    )
    assert "link" not in parse_event_message(ses.raw_message(ses.click_event(link="x"))).detail


@pytest.mark.parametrize("build", [ses.bounce_event, ses.complaint_event, ses.delivery_event])
def test_identity_notifications_use_notification_type_and_carry_no_tags(
    build: Callable[..., Event],
) -> None:
    notification = ses.as_identity_notification(build(email_id=123, job_id=7))
    assert "eventType" not in notification

    event = parse_event_message(ses.sns_envelope(notification))

    assert event.event_type == notification["notificationType"]
    assert (event.email_id, event.job_id) == (None, None)  # matched by messageId instead


def test_id_headers_stand_in_for_missing_tags() -> None:
    tagged = ses.bounce_event(email_id=123, job_id=7, id_headers=True)
    notification = ses.as_identity_notification(tagged)

    event = parse_event_message(ses.sns_envelope(notification))

    assert (event.email_id, event.job_id) == (123, 7)


def test_no_tags_and_no_headers_mean_no_ids() -> None:
    event = parse_event_message(ses.raw_message(ses.delivery_event()))

    assert (event.email_id, event.job_id) == (None, None)
    assert not resolves_unknown(event)


def test_a_tag_we_did_not_write_is_ignored() -> None:
    event = ses.send_event(email_id=123, job_id=7, id_headers=True)
    event["mail"]["tags"]["email_id"] = ["statement-123"]
    event["mail"]["tags"]["job_id"] = ["0"]

    parsed = parse_event_message(ses.raw_message(event))

    assert (parsed.email_id, parsed.job_id) == (123, 7)  # from the headers
    del event["mail"]["headers"]
    assert parse_event_message(ses.raw_message(event)).email_id is None


def test_the_aws_bounce_notification_with_a_dsn_names_only_the_bounced_recipient() -> None:
    # AWS's "Bounce notification with a DSN": three destinations, one bounced.
    notification = {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "reportingMTA": "dns; email.example.com",
            "bouncedRecipients": [
                {
                    "emailAddress": "jane@example.com",
                    "status": "5.1.1",
                    "action": "failed",
                    "diagnosticCode": "smtp; 550 5.1.1 <jane@example.com>... User",
                }
            ],
            "bounceSubType": "General",
            "timestamp": "2016-01-27T14:59:38.237Z",
            "feedbackId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa068a-000000",
            "remoteMtaIp": "127.0.2.0",
        },
        "mail": {
            "timestamp": "2016-01-27T14:59:38.237Z",
            "source": "john@example.com",
            "messageId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
            "destination": ["jane@example.com", "mary@example.com", "richard@example.com"],
        },
    }

    event = parse_event_message(json.dumps(notification))

    assert event.recipients == ("jane@example.com",)
    assert event.occurred_at == datetime(2016, 1, 27, 14, 59, 38, 237000)
    assert is_permanent_bounce(event)
    assert "jane@example.com" not in json.dumps(event.detail)


def test_eventbridge_detail_without_event_type_takes_it_from_detail_type() -> None:
    inner = ses.bounce_event()
    del inner["eventType"]
    body = json.dumps({"source": "aws.ses", "detail-type": "Email Bounced", "detail": inner})

    assert parse_event_message(body).event_type == "Bounce"


def test_an_eventbridge_event_carried_by_sns_is_unwrapped_twice() -> None:
    body = ses.sns_envelope(ses.eventbridge_event(ses.delivery_event(email_id=5)))

    event = parse_event_message(body)

    assert (event.event_type, event.email_id) == ("Delivery", 5)


def test_times_with_an_offset_become_naive_utc() -> None:
    event = ses.delivery_event()
    event["delivery"]["timestamp"] = "2017-08-05T02:40:14+02:00"

    assert parse_event_message(ses.raw_message(event)).occurred_at == datetime(
        2017, 8, 5, 0, 40, 14
    )


def test_an_event_without_its_own_time_takes_the_mails() -> None:
    event = ses.delivery_event()
    del event["delivery"]["timestamp"]

    assert parse_event_message(ses.raw_message(event)).occurred_at == SENT_AT


@pytest.mark.parametrize("event_type", ["Subscription", "Rendering Failure", "SomethingNew"])
def test_an_unknown_or_inert_event_type_is_an_event_with_no_effect(event_type: str) -> None:
    event = ses.send_event(email_id=9)
    event["eventType"] = event_type

    parsed = parse_event_message(ses.raw_message(event))

    assert parsed.event_type == event_type
    assert parsed.email_id == 9
    assert delivery_status_for(parsed) is None
    assert not resolves_unknown(parsed)


def _node(event: Event, path: str) -> tuple[dict[str, Any], str]:
    *parents, last = path.split(".")
    node = event
    for parent in parents:
        node = node[parent]
    return node, last


def _without(*paths: str) -> str:
    event = ses.bounce_event()
    for path in paths:
        node, key = _node(event, path)
        del node[key]
    return ses.raw_message(event)


def _with(path: str, value: object) -> str:
    event = ses.bounce_event()
    node, key = _node(event, path)
    node[key] = value
    return ses.raw_message(event)


MALFORMED = {
    "not JSON": ("{not json", "event message is not JSON"),
    "an array": ("[1, 2]", "event message is not a JSON object"),
    "empty": ("", "event message is not JSON"),
    "subscription confirmation": (
        json.dumps({"Type": "SubscriptionConfirmation", "Token": "x"}),
        "SNS message is not a Notification",
    ),
    "SNS without Message": (json.dumps({"Type": "Notification"}), "no Message string"),
    "SNS Message not JSON": (ses.sns_envelope("{oops"), "SNS notification Message is not JSON"),
    "EventBridge from elsewhere": (
        json.dumps({"source": "aws.s3", "detail-type": "Object Created", "detail": {}}),
        "not from aws.ses",
    ),
    "EventBridge without detail": (
        json.dumps({"source": "aws.ses", "detail-type": "Email Bounced"}),
        "no detail object",
    ),
    "no event type": (_without("eventType"), "no eventType or notificationType"),
    "no mail": (_without("mail"), "no mail object"),
    "no message id": (_without("mail.messageId"), "no mail.messageId"),
    "no bounce object": (_without("bounce"), "Bounce event has no bounce object"),
    "no time at all": (_without("bounce.timestamp", "mail.timestamp"), "no mail.timestamp"),
    "a time that is a number": (_with("bounce.timestamp", 1501893662), "is not a string"),
    "a time that is no time": (_with("bounce.timestamp", "yesterday"), "bounce.timestamp"),
    "a time out of range in UTC": (
        _with("bounce.timestamp", "0001-01-01T00:00:00+01:00"),
        "bounce.timestamp is not an ISO 8601 time",
    ),
    "recipients not a list": (
        _with("bounce.bouncedRecipients", RECIPIENT),
        "bounce.bouncedRecipients is not a list",
    ),
    "a recipient without address": (
        _with("bounce.bouncedRecipients", [{"status": "5.1.1"}]),
        "entry without an address",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_messages_name_what_was_wrong_and_quote_nothing(case: str) -> None:
    body, expected = MALFORMED[case]

    with pytest.raises(MalformedEventError) as caught:
        parse_event_message(body)

    assert expected in str(caught.value)
    assert RECIPIENT not in str(caught.value)
    assert isinstance(caught.value, PermanentError)


def test_a_message_over_256_kib_is_malformed_before_it_is_parsed() -> None:
    event = ses.send_event()
    event["mail"]["headers"].append({"name": "X-Padding", "value": "x" * MAX_EVENT_BYTES})

    with pytest.raises(MalformedEventError, match="larger than 256 KiB"):
        parse_event_message(ses.sns_envelope(event))
    # Multi-byte characters count as bytes, not characters.
    wide = "é" * (MAX_EVENT_BYTES // 2 + 1)
    with pytest.raises(MalformedEventError, match="larger than 256 KiB"):
        parse_event_message(wide)


def test_deeply_nested_json_is_malformed_not_a_crash() -> None:
    with pytest.raises(MalformedEventError, match="not JSON"):
        parse_event_message("[" * 100_000 + "]" * 100_000)


D, V, R, B, C = (
    DeliveryStatus.DELAYED,
    DeliveryStatus.DELIVERED,
    DeliveryStatus.REJECTED,
    DeliveryStatus.BOUNCED,
    DeliveryStatus.COMPLAINED,
)


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        (None, D, True),
        (None, V, True),
        (D, V, True),  # delayed, then delivered
        (V, D, False),  # a late delay does not undo a delivery
        (V, B, True),  # bounced after the recipient's server first took it
        (B, V, False),  # a bounce is never overwritten by a later Delivery
        (C, V, False),
        (V, C, True),  # a complaint after delivery is recorded
        (B, C, True),  # and after a bounce
        (B, R, False),  # same rank: the first word stays
        (R, B, False),
        (V, V, False),
        (C, C, False),
    ],
)
def test_status_moves_forward_only(
    current: DeliveryStatus | None, new: DeliveryStatus, expected: bool
) -> None:
    assert moves_forward(current, new) is expected


def _parsed(event: Event) -> TrackingEvent:
    return parse_event_message(ses.raw_message(event))


def test_send_and_delivery_with_an_email_id_resolve_unknown() -> None:
    assert resolves_unknown(_parsed(ses.send_event(email_id=1)))
    assert resolves_unknown(_parsed(ses.delivery_event(email_id=1)))
    assert not resolves_unknown(_parsed(ses.bounce_event(email_id=1)))
    assert not resolves_unknown(_parsed(ses.open_event(email_id=1)))


def test_only_a_permanent_bounce_is_a_hard_bounce() -> None:
    assert is_permanent_bounce(_parsed(ses.bounce_event()))
    assert not is_permanent_bounce(_parsed(_transient()))
    assert not is_permanent_bounce(_parsed(ses.bounce_event(bounce_type="Undetermined")))
    assert not is_permanent_bounce(_parsed(ses.complaint_event()))


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (ses.bounce_event(), "Permanent/General"),
        (_transient(), "Transient/MailboxFull"),
        (ses.delivery_event(), "250 2.6.0"),
        (ses.delivery_delay_event(), "TransientCommunicationFailure 4.4.1"),
        (ses.complaint_event(), "abuse"),
        (ses.reject_event(), "Bad content"),
        (ses.send_event(), None),
        (ses.open_event(), None),
        (ses.click_event(), None),
    ],
)
def test_delivery_detail_is_short_and_names_no_address(event: Event, expected: str | None) -> None:
    assert delivery_detail(_parsed(event)) == expected


def test_delivery_detail_is_cut_to_the_column_and_keeps_addresses_out() -> None:
    event = ses.reject_event()
    event["reject"]["reason"] = f"Rejected for {RECIPIENT}: " + "x" * 1000

    text = delivery_detail(_parsed(event))

    assert text is not None
    assert len(text) <= 255
    assert RECIPIENT not in text
