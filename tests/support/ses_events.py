"""SES event payloads shaped like AWS's documented examples, and the envelopes they travel in.

The event builders follow "Examples of event data that Amazon SES publishes to Amazon SNS"
(configuration-set event publishing: ``eventType``, tags on every event);
``as_identity_notification`` turns one into the older identity feedback form of "Amazon
SNS notification examples for Amazon SES" (``notificationType``, no tags). The wrappers
give the three forms AWS puts on an SQS queue: an SNS notification envelope, SNS raw
message delivery, and an EventBridge event (``source: aws.ses``).

Each builder takes the SES message id, our ``email_id`` / ``job_id`` tags (None: untagged)
and the recipient, so integration tests can aim an event at a row they created.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

MESSAGE_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
RECIPIENT = "recipient@example.com"
SENDER = "sender@example.com"
SUBJECT = "Your statement for 2017"
SENT_AT = datetime(2017, 8, 5, 0, 40, 2, 12000)  # naive UTC, as the product stores times
TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:ses-events"
ACCOUNT = "123456789012"
CLICKED_LINK = "https://statements.example.com/2017/view.html?customer=recipient%40example.com#top"

Event = dict[str, Any]

# EventBridge's detail-type for each SES event type.
DETAIL_TYPES = {
    "Send": "Email Sent",
    "Delivery": "Email Delivered",
    "Bounce": "Email Bounced",
    "Complaint": "Email Complaint Received",
    "DeliveryDelay": "Email Delivery Delayed",
    "Reject": "Email Rejected",
    "Open": "Email Opened",
    "Click": "Email Clicked",
    "Rendering Failure": "Email Rendering Failed",
    "Subscription": "Email Subscribed",
}


def stamp(moment: datetime) -> str:
    """SES's time format: ISO 8601 in UTC with milliseconds and a ``Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def mail_object(
    message_id: str = MESSAGE_ID,
    *,
    email_id: int | None = None,
    job_id: int | None = None,
    recipient: str = RECIPIENT,
    sent_at: datetime = SENT_AT,
    id_headers: bool = False,
) -> Event:
    """The ``mail`` object every event carries (original headers included)."""
    tags: dict[str, list[str]] = {
        "ses:configuration-set": ["delivery"],
        "ses:source-ip": ["192.0.2.0"],
        "ses:from-domain": ["example.com"],
        "ses:caller-identity": ["ses_user"],
    }
    if job_id is not None:
        tags["job_id"] = [str(job_id)]
    if email_id is not None:
        tags["email_id"] = [str(email_id)]
    headers = [
        {"name": "From", "value": f"Statements <{SENDER}>"},
        {"name": "To", "value": recipient},
        {"name": "Subject", "value": SUBJECT},
        {"name": "MIME-Version", "value": "1.0"},
        {"name": "Content-Type", "value": 'multipart/mixed; boundary="----=_Part_7307378"'},
    ]
    if id_headers:
        headers += [
            {"name": "X-Delivery-Job-Id", "value": str(job_id)},
            {"name": "X-Delivery-Email-Id", "value": str(email_id)},
        ]
    return {
        "timestamp": stamp(sent_at),
        "source": f"Statements <{SENDER}>",
        "sourceArn": f"arn:aws:ses:us-east-1:{ACCOUNT}:identity/{SENDER}",
        "sendingAccountId": ACCOUNT,
        "messageId": message_id,
        "destination": [recipient],
        "headersTruncated": False,
        "headers": headers,
        "commonHeaders": {
            "from": [f"Statements <{SENDER}>"],
            "to": [recipient],
            "messageId": message_id,
            "subject": SUBJECT,
        },
        "tags": tags,
    }


def _event(event_type: str, section: str, body: Event, **mail: Any) -> Event:
    return {"eventType": event_type, "mail": mail_object(**mail), section: body}


def send_event(message_id: str = MESSAGE_ID, **mail: Any) -> Event:
    """``Send``: SES accepted the email (no time of its own: the mail's)."""
    return _event("Send", "send", {}, message_id=message_id, **mail)


def delivery_event(
    message_id: str = MESSAGE_ID, *, at: datetime | None = None, **mail: Any
) -> Event:
    """``Delivery``: the recipient's server took the email."""
    recipient = mail.get("recipient", RECIPIENT)
    body = {
        "timestamp": stamp(at or _after(mail, seconds=12)),
        "processingTimeMillis": 11893,
        "recipients": [recipient],
        "smtpResponse": f"250 2.6.0 <{recipient}> Message received",
        "reportingMTA": "mta.example.com",
    }
    return _event("Delivery", "delivery", body, message_id=message_id, **mail)


def bounce_event(
    message_id: str = MESSAGE_ID,
    *,
    bounce_type: str = "Permanent",
    sub_type: str | None = None,
    at: datetime | None = None,
    **mail: Any,
) -> Event:
    """``Bounce``: Permanent/General by default; ``bounce_type="Transient"`` is a full
    mailbox (after SES gave up retrying)."""
    recipient = mail.get("recipient", RECIPIENT)
    permanent = bounce_type == "Permanent"
    status = "5.1.1" if permanent else "4.2.2"
    diagnostic = (
        f"smtp; 550 5.1.1 <{recipient}>... User unknown"
        if permanent
        else ("smtp; 452 4.2.2 Mailbox full")
    )
    body = {
        "bounceType": bounce_type,
        "bounceSubType": sub_type or ("General" if permanent else "MailboxFull"),
        "bouncedRecipients": [
            {
                "emailAddress": recipient,
                "action": "failed",
                "status": status,
                "diagnosticCode": diagnostic,
            }
        ],
        "timestamp": stamp(at or _after(mail, seconds=60)),
        "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000",
        "reportingMTA": "dsn; mta.example.com",
    }
    return _event("Bounce", "bounce", body, message_id=message_id, **mail)


def complaint_event(
    message_id: str = MESSAGE_ID,
    *,
    feedback_type: str = "abuse",
    at: datetime | None = None,
    **mail: Any,
) -> Event:
    """``Complaint``: the recipient marked the email as spam."""
    body = {
        "complainedRecipients": [{"emailAddress": mail.get("recipient", RECIPIENT)}],
        "timestamp": stamp(at or _after(mail, seconds=3600)),
        "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000001",
        "userAgent": "AnyCompany Feedback Loop (V0.01)",
        "complaintFeedbackType": feedback_type,
        "arrivalDate": stamp(at or _after(mail, seconds=3600)),
    }
    return _event("Complaint", "complaint", body, message_id=message_id, **mail)


def delivery_delay_event(
    message_id: str = MESSAGE_ID, *, at: datetime | None = None, **mail: Any
) -> Event:
    """``DeliveryDelay``: the recipient's server could not be reached for now."""
    body = {
        "timestamp": stamp(at or _after(mail, seconds=600)),
        "delayType": "TransientCommunicationFailure",
        "expirationTime": stamp(_after(mail, seconds=86400)),
        "delayedRecipients": [
            {
                "emailAddress": mail.get("recipient", RECIPIENT),
                "status": "4.4.1",
                "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host",
            }
        ],
    }
    return _event("DeliveryDelay", "deliveryDelay", body, message_id=message_id, **mail)


def reject_event(message_id: str = MESSAGE_ID, **mail: Any) -> Event:
    """``Reject``: SES found a virus and did not try to deliver (the mail's time)."""
    return _event("Reject", "reject", {"reason": "Bad content"}, message_id=message_id, **mail)


def open_event(message_id: str = MESSAGE_ID, *, at: datetime | None = None, **mail: Any) -> Event:
    """``Open``: the recipient opened the email."""
    body = {
        "ipAddress": "192.0.2.1",
        "timestamp": stamp(at or _after(mail, seconds=1800)),
        "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 10_3_3 like Mac OS X) Mobile/14G60",
    }
    return _event("Open", "open", body, message_id=message_id, **mail)


def click_event(
    message_id: str = MESSAGE_ID,
    *,
    link: str = CLICKED_LINK,
    at: datetime | None = None,
    **mail: Any,
) -> Event:
    """``Click``: the recipient followed a link (its query carries personal data)."""
    body = {
        "ipAddress": "192.0.2.1",
        "link": link,
        "linkTags": {"samplekey0": ["samplevalue0"]},
        "timestamp": stamp(at or _after(mail, seconds=2400)),
        "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/60.0.3112.90",
    }
    return _event("Click", "click", body, message_id=message_id, **mail)


def as_identity_notification(event: Event) -> Event:
    """The identity feedback form of the same event: ``notificationType``, and no tags
    (SES publishes tags only through configuration sets)."""
    notification = {key: value for key, value in event.items() if key != "eventType"}
    notification = {"notificationType": event["eventType"], **notification}
    notification["mail"] = {k: v for k, v in event["mail"].items() if k != "tags"}
    return notification


def raw_message(event: Event) -> str:
    """SNS raw message delivery: the SES event JSON itself."""
    return json.dumps(event)


def sns_envelope(event: Event | str, *, topic_arn: str = TOPIC_ARN) -> str:
    """An SNS notification carrying ``event`` (or any JSON text) as its ``Message``."""
    message = event if isinstance(event, str) else json.dumps(event)
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": str(uuid.uuid5(uuid.NAMESPACE_URL, message)),
            "TopicArn": topic_arn,
            "Message": message,
            "Timestamp": stamp(SENT_AT),
            "SignatureVersion": "1",
            "Signature": "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fUQ",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-EXAMPLE.pem",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        }
    )


def eventbridge_event(event: Event) -> str:
    """The EventBridge event SES puts on the default bus for ``event``."""
    body = json.dumps(event)
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, body)),
            "detail-type": DETAIL_TYPES.get(event.get("eventType", ""), "Email Event"),
            "source": "aws.ses",
            "account": ACCOUNT,
            "time": event["mail"]["timestamp"][:19] + "Z",
            "region": "us-east-1",
            "resources": [f"arn:aws:ses:us-east-1:{ACCOUNT}:configuration-set/delivery"],
            "detail": event,
        }
    )


# The three forms an SES event arrives in on the events queue, by name.
ENVELOPES: dict[str, Callable[[Event], str]] = {
    "sns": sns_envelope,
    "raw": raw_message,
    "eventbridge": eventbridge_event,
}


def _after(mail: dict[str, Any], *, seconds: int) -> datetime:
    sent_at: datetime = mail.get("sent_at", SENT_AT)
    return sent_at + timedelta(seconds=seconds)
