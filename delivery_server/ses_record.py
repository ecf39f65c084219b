"""One SES event record (the object inside any envelope) read into a ``TrackingEvent``.

Pure functions, no I/O. The record's type-specific object gives the time, the recipients
and the facts kept in ``detail``; recipient addresses go to ``recipients`` only, and are
cut out of free text (diagnostic codes quote them). Subject, body and common headers are
never read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from delivery_server.errors import MalformedEventError
from delivery_server.models import DeliveryStatus, TrackingEvent

# Ids come from our own tags; a longer value is not one of ours.
_MAX_ID_DIGITS = 18
_MAX_MESSAGE_ID_LENGTH = 255
_MAX_EVENT_TYPE_LENGTH = 64
# Free text (diagnostic codes, SMTP responses) is cut here: enough to diagnose, small rows.
_MAX_TEXT_LENGTH = 500

EMAIL_ID_TAG, JOB_ID_TAG = "email_id", "job_id"
EMAIL_ID_HEADER, JOB_ID_HEADER = "x-delivery-email-id", "x-delivery-job-id"


@dataclass(frozen=True, slots=True)
class _Kind:
    """What one SES event type carries, under SES's own names."""

    section: str  # the key of the type's own object
    required: bool = False  # the event means nothing without that object
    recipients: str | None = None  # its recipient list; None: mail.destination
    facts: tuple[str, ...] = ()  # kept in ``detail`` (recipient lists: without addresses)
    status: DeliveryStatus | None = None


_KINDS = {
    "Send": _Kind("send"),
    "Delivery": _Kind(
        "delivery",
        required=True,
        recipients="recipients",
        facts=("processingTimeMillis", "smtpResponse", "reportingMTA"),
        status=DeliveryStatus.DELIVERED,
    ),
    "Bounce": _Kind(
        "bounce",
        required=True,
        recipients="bouncedRecipients",
        facts=("bounceType", "bounceSubType", "reportingMTA", "feedbackId"),
        status=DeliveryStatus.BOUNCED,
    ),
    "Complaint": _Kind(
        "complaint",
        required=True,
        recipients="complainedRecipients",
        facts=("complaintFeedbackType", "complaintSubType", "userAgent", "feedbackId"),
        status=DeliveryStatus.COMPLAINED,
    ),
    "DeliveryDelay": _Kind(
        "deliveryDelay",
        required=True,
        recipients="delayedRecipients",
        facts=("delayType", "expirationTime", "reportingMTA"),
        status=DeliveryStatus.DELAYED,
    ),
    "Reject": _Kind("reject", facts=("reason",), status=DeliveryStatus.REJECTED),
    "Open": _Kind("open", required=True, facts=("userAgent",)),
    "Click": _Kind("click", required=True, facts=("userAgent",)),
    "Rendering Failure": _Kind("failure", facts=("templateName", "errorMessage")),
    "Subscription": _Kind("subscription"),
}
_NO_KIND = _Kind("")
_RECIPIENT_FACTS = ("action", "status", "diagnosticCode")
# Diagnostic codes quote the address ("550 5.1.1 <jane@example.com>... User"); an empty
# domain still counts, for an address cut short by a length limit.
_ADDRESS = re.compile(r"<?[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]*>?")


def read_record(ses: dict[str, Any]) -> TrackingEvent:
    """Read one SES event record; ``MalformedEventError`` names what was wrong."""
    event_type = ses.get("eventType", ses.get("notificationType"))
    if not isinstance(event_type, str) or not event_type.strip():
        raise MalformedEventError("SES event has no eventType or notificationType")
    if len(event_type) > _MAX_EVENT_TYPE_LENGTH:
        raise MalformedEventError("SES event type is longer than 64 characters")
    mail = ses.get("mail")
    if not isinstance(mail, dict):
        raise MalformedEventError("SES event has no mail object")
    message_id = mail.get("messageId")
    if not isinstance(message_id, str) or not message_id.strip():
        raise MalformedEventError("SES event has no mail.messageId")
    if len(message_id) > _MAX_MESSAGE_ID_LENGTH:
        raise MalformedEventError("SES mail.messageId is longer than 255 characters")
    kind = _KINDS.get(event_type, _NO_KIND)
    section = ses.get(kind.section) if kind.section else None
    if not isinstance(section, dict):
        if kind.required:
            raise MalformedEventError(f"{event_type} event has no {kind.section} object")
        section = {}
    tags, headers = _tags(mail), _headers(mail)
    bounce_type = section.get("bounceType") if event_type == "Bounce" else None
    return TrackingEvent(
        event_type=event_type,
        provider_message_id=message_id,
        occurred_at=_occurred_at(kind, section, mail),
        email_id=_id(tags, headers, EMAIL_ID_TAG, EMAIL_ID_HEADER),
        job_id=_id(tags, headers, JOB_ID_TAG, JOB_ID_HEADER),
        recipients=_recipients(kind, section, mail),
        bounce_type=bounce_type if isinstance(bounce_type, str) else None,
        detail=_detail(event_type, kind, section),
    )


def _occurred_at(kind: _Kind, section: dict[str, Any], mail: dict[str, Any]) -> datetime:
    # The type's own time (a bounce comes minutes after the send); Send and Reject have
    # none, so the mail's. Falling back keeps an event whose own time is missing.
    stamp, where = section.get("timestamp"), f"{kind.section}.timestamp"
    if stamp is None:
        stamp, where = mail.get("timestamp"), "mail.timestamp"
    if stamp is None:
        raise MalformedEventError(f"SES event has no {where}")
    if not isinstance(stamp, str):
        raise MalformedEventError(f"SES event {where} is not a string")
    try:
        moment = datetime.fromisoformat(stamp)
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError) as exc:  # overflow: year 1 or 9999 moved to UTC
        raise MalformedEventError(f"SES event {where} is not an ISO 8601 time") from exc
    return moment


def _tags(mail: dict[str, Any]) -> dict[str, Any]:
    tags = mail.get("tags")
    return tags if isinstance(tags, dict) else {}


def _headers(mail: dict[str, Any]) -> dict[str, str]:
    # Only our two id headers are looked at; the others (Subject, To) are never read.
    found: dict[str, str] = {}
    headers = mail.get("headers")
    for header in headers if isinstance(headers, list) else ():
        if not isinstance(header, dict):
            continue
        name, value = header.get("name"), header.get("value")
        if isinstance(name, str) and isinstance(value, str):
            lowered = name.strip().lower()
            if lowered in (EMAIL_ID_HEADER, JOB_ID_HEADER):
                found.setdefault(lowered, value)
    return found


def _id(tags: dict[str, Any], headers: dict[str, str], tag: str, header: str) -> int | None:
    # A value that is not a positive integer was not written by us (another sender on
    # the same configuration set): it is ignored, and matching falls back to messageId.
    values = tags.get(tag)
    if isinstance(values, list) and values:
        from_tag = _positive_int(values[0])
        if from_tag is not None:
            return from_tag
    return _positive_int(headers.get(header))


def _positive_int(value: object) -> int | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_ID_DIGITS:
        return None
    number = int(text)
    return number if number > 0 else None


def _recipients(kind: _Kind, section: dict[str, Any], mail: dict[str, Any]) -> tuple[str, ...]:
    # A bounce or complaint names only its own recipients: falling back to the whole
    # destination list would suppress addresses that never bounced.
    key = kind.recipients
    entries = section.get(key) if key else mail.get("destination")
    if entries is None:
        return ()
    where = f"{kind.section}.{key}" if key else "mail.destination"
    if not isinstance(entries, list):
        raise MalformedEventError(f"SES event {where} is not a list")
    addresses = []
    for entry in entries:
        address = entry.get("emailAddress") if isinstance(entry, dict) else entry
        if not isinstance(address, str):
            raise MalformedEventError(f"SES event {where} has an entry without an address")
        if address.strip():
            addresses.append(address.strip())
    return tuple(addresses)


def _detail(event_type: str, kind: _Kind, section: dict[str, Any]) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    for name in kind.facts:
        value = _fact(section.get(name))
        if value is not None:
            detail[name] = value
    key = kind.recipients
    entries = section.get(key) if key else None
    if key and isinstance(entries, list):
        facts = [_recipient_facts(entry) for entry in entries if isinstance(entry, dict)]
        if any(facts):
            detail[key] = facts
    if event_type == "Click":
        link = _link_without_query(section.get("link"))
        if link is not None:
            detail["link"] = link
    return detail


def _recipient_facts(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        name: value for name in _RECIPIENT_FACTS if (value := _fact(entry.get(name))) is not None
    }


def _fact(value: object) -> str | int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        # JSON columns refuse NaN and infinities (both fail this test, as NaN fails every
        # comparison); past 2**53 a number is no SES fact.
        return value if abs(value) < 2**53 else None
    if isinstance(value, str) and value.strip():
        return redact(value.strip()[:_MAX_TEXT_LENGTH])
    return None


def redact(text: str) -> str:
    """``text`` with every address-like word replaced by ``<address>``.

    Cut long text before redacting it: the search is quadratic in a word without ``@``.
    """
    # Most facts (types, status codes) have no "@": skip the search, the parse's costliest step.
    return _ADDRESS.sub("<address>", text) if "@" in text else text


def _link_without_query(link: object) -> str | None:
    # Query strings and fragments carry personal data (ids, addresses, tokens); userinfo
    # too. Scheme, host and path say which link it was.
    if not isinstance(link, str):
        return None
    try:
        parts = urlsplit(link.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not parts.scheme or not host:
        return None
    netloc = f"{host}:{port}" if port else host
    return redact(f"{parts.scheme.lower()}://{netloc}{parts.path}"[:_MAX_TEXT_LENGTH])


def status_of(event_type: str) -> DeliveryStatus | None:
    """The delivery status an event type reports, or None."""
    return _KINDS.get(event_type, _NO_KIND).status
