"""SES events read and judged (DESIGN §2, §3, §5): pure functions, no I/O.

An SES event reaches the events queue in one of three envelopes, all accepted here:

* an SNS notification (``{"Type": "Notification", "Message": "<SES event JSON>"}``);
* SNS raw message delivery (the SES event JSON itself);
* an EventBridge event (``{"source": "aws.ses", "detail-type": ..., "detail": {...}}``),
  also when an SNS topic carries it as its ``Message``.

Configuration-set event publishing names the type ``eventType``; identity feedback
notifications name it ``notificationType`` and carry no tags. Both are read the same way.
An event type we do not know is still an event (stored, with no effect on any status).

The record inside is read by ``ses_record`` (time, ids, recipients, ``detail`` without
addresses). The status rules below decide what an event does to its email.
"""

from __future__ import annotations

import json
import re
from typing import Any

from delivery_server.errors import MalformedEventError
from delivery_server.models import DeliveryStatus, TrackingEvent
from delivery_server.ses_record import read_record, redact, status_of

# SQS's classic message size limit: anything larger did not come from SES.
MAX_EVENT_BYTES = 256 * 1024
MAX_DELIVERY_DETAIL_LENGTH = 255

# EventBridge names the type in ``detail-type``; ``detail`` normally repeats it as eventType.
_DETAIL_TYPES = {
    "Email Sent": "Send",
    "Email Delivered": "Delivery",
    "Email Bounced": "Bounce",
    "Email Complaint Received": "Complaint",
    "Email Delivery Delayed": "DeliveryDelay",
    "Email Rejected": "Reject",
    "Email Opened": "Open",
    "Email Clicked": "Click",
    "Email Rendering Failed": "Rendering Failure",
    "Email Subscribed": "Subscription",
}
# Status moves forward only: a later Delivery never hides a bounce or a complaint, and a
# complaint after a delivery (or a bounce) is still recorded.
_RANK = {
    DeliveryStatus.DELAYED: 1,
    DeliveryStatus.DELIVERED: 2,
    DeliveryStatus.REJECTED: 3,
    DeliveryStatus.BOUNCED: 3,
    DeliveryStatus.COMPLAINED: 4,
}

_SMTP_CODE = re.compile(r"\s*(\d{3})(?:[ -](\d\.\d{1,3}\.\d{1,3}))?")


def parse_event_message(body: str) -> TrackingEvent:
    """Read one events-queue message (any of the three envelopes) into a ``TrackingEvent``.

    Raises ``MalformedEventError`` naming what was wrong (never quoting the payload).
    """
    if len(body) > MAX_EVENT_BYTES or len(body.encode("utf-8", "surrogatepass")) > MAX_EVENT_BYTES:
        raise MalformedEventError("event message is larger than 256 KiB")
    return read_record(_unwrap(_load(body, "event message")))


def _load(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedEventError(f"{what} is not JSON") from exc
    if not isinstance(data, dict):
        raise MalformedEventError(f"{what} is not a JSON object")
    return data


def _unwrap(data: dict[str, Any]) -> dict[str, Any]:
    if "Type" in data:  # SNS envelope; SES events have no top-level "Type"
        if data["Type"] != "Notification":
            raise MalformedEventError("SNS message is not a Notification: it carries no event")
        message = data.get("Message")
        if not isinstance(message, str):
            raise MalformedEventError("SNS notification has no Message string")
        data = _load(message, "SNS notification Message")
    if "detail-type" in data or "detail" in data:
        return _eventbridge_detail(data)
    return data


def _eventbridge_detail(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("source") != "aws.ses":
        raise MalformedEventError("EventBridge event is not from aws.ses")
    detail = data.get("detail")
    if not isinstance(detail, dict):
        raise MalformedEventError("EventBridge event has no detail object")
    if "eventType" not in detail and "notificationType" not in detail:
        named = data.get("detail-type")
        if isinstance(named, str) and named in _DETAIL_TYPES:
            detail = {**detail, "eventType": _DETAIL_TYPES[named]}
    return detail


def delivery_status_for(event: TrackingEvent) -> DeliveryStatus | None:
    """The delivery status an event reports, or None (Send, Open, Click and the rest)."""
    return status_of(event.event_type)


def moves_forward(current: DeliveryStatus | None, new: DeliveryStatus) -> bool:
    """Whether ``new`` may replace ``current``: only a strictly higher rank does
    (delayed < delivered < rejected = bounced < complained)."""
    return current is None or _RANK[new] > _RANK[current]


def resolves_unknown(event: TrackingEvent) -> bool:
    """Whether the event proves SES accepted an email: a ``Send`` or ``Delivery`` that
    names our ``email_id`` turns an ``unknown`` email into ``sent``."""
    return event.event_type in ("Send", "Delivery") and event.email_id is not None


def is_permanent_bounce(event: TrackingEvent) -> bool:
    """A hard bounce: what suppresses an address and what the reputation brake counts."""
    return event.event_type == "Bounce" and event.bounce_type == "Permanent"


def delivery_detail(event: TrackingEvent) -> str | None:
    """Short text for ``delivery_email.delivery_detail``: bounce type/sub-type, delay type,
    SMTP status code, complaint feedback type or reject reason; never an address."""
    detail = event.detail
    text: str | None = None
    if event.event_type == "Bounce":
        kinds = [detail.get("bounceType"), detail.get("bounceSubType")]
        text = "/".join(str(kind) for kind in kinds if kind) or None
    elif event.event_type == "DeliveryDelay":
        text = _joined(detail.get("delayType"), _first_status(detail.get("delayedRecipients")))
    elif event.event_type == "Delivery":
        text = _smtp_code(detail.get("smtpResponse"))
    elif event.event_type == "Complaint":
        text = detail.get("complaintFeedbackType") or detail.get("complaintSubType")
    elif event.event_type == "Reject":
        text = detail.get("reason")
    if not text:
        return None
    # Cut before redacting (the search grows with the square of a long word).
    return redact(str(text)[: MAX_DELIVERY_DETAIL_LENGTH * 2])[:MAX_DELIVERY_DETAIL_LENGTH]


def _first_status(facts: object) -> str | None:
    if isinstance(facts, list) and facts and isinstance(facts[0], dict):
        status = facts[0].get("status")
        return status if isinstance(status, str) else None
    return None


def _joined(*parts: object) -> str | None:
    return " ".join(str(part) for part in parts if part) or None


def _smtp_code(response: object) -> str | None:
    # "250 2.6.0 Message received" -> "250 2.6.0": the rest is the server's free text.
    match = _SMTP_CODE.match(response) if isinstance(response, str) else None
    return _joined(match.group(1), match.group(2)) if match else None
