"""SES event payloads as SES publishes them, for the senders that play SES's part.

The outbox (embedded mode) and the stand-in (benchmarks, QA) report what happened to each
email they accept the way SES event publishing does, so the tracker reads one format
whatever sent the email. The shapes follow AWS's "Examples of event data that Amazon SES
publishes to Amazon SNS": a top-level ``eventType``, the ``mail`` object (``messageId``,
``timestamp``, ``source``, ``destination``, ``tags`` as lists of strings) and the
type's own object (``send``, ``delivery``, ``bounce``, ``complaint``). The original
headers and the subject are left out: nothing reads them, and a subject is personal data.

The SES mailbox simulator's addresses (``bounce@``, ``complaint@``, ``ooto@``,
``suppressionlist@``, ``success@simulator.amazonses.com``, each also with a ``+label``)
choose the outcome, as they do at SES.

Everything here is a pure function of its arguments: no clock, no randomness, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

Payload = dict[str, Any]

SIMULATOR_DOMAIN = "simulator.amazonses.com"
ACCOUNT_ID = "000000000000"  # what local stand-ins of AWS report as their account
REGION = "us-east-1"
REPORTING_MTA = "a0-1.smtp-out.us-east-1.amazonses.com"
SUPPRESSION_LIST = "OnAccountSuppressionList"  # the bounce sub-type of suppressionlist@


class MailboxOutcome(StrEnum):
    """What happens to one recipient after SES accepted the email."""

    DELIVERED = "delivered"  # any address, success@, ooto@ (an auto-reply is no event)
    BOUNCED = "bounced"  # bounce@: a permanent, general bounce
    COMPLAINED = "complained"  # complaint@: delivered, then marked as spam
    SUPPRESSED = "suppressed"  # suppressionlist@: on the account's list, never attempted


_SIMULATOR_MAILBOXES = {
    "success": MailboxOutcome.DELIVERED,
    "ooto": MailboxOutcome.DELIVERED,
    "bounce": MailboxOutcome.BOUNCED,
    "complaint": MailboxOutcome.COMPLAINED,
    "suppressionlist": MailboxOutcome.SUPPRESSED,
}


def mailbox_simulator_outcome(address: str) -> MailboxOutcome:
    """The outcome SES's mailbox simulator gives ``address``; delivery for any other."""
    local, at, domain = address.strip().rpartition("@")
    if not at or domain.lower() != SIMULATOR_DOMAIN:
        return MailboxOutcome.DELIVERED
    mailbox = local.split("+", 1)[0].lower()
    return _SIMULATOR_MAILBOXES.get(mailbox, MailboxOutcome.DELIVERED)


@dataclass(frozen=True, slots=True)
class AcceptedMail:
    """What SES knows of an email it accepted: the facts every event of it repeats."""

    message_id: str
    source: str  # the From address
    destination: tuple[str, ...]
    sent_at: datetime  # aware, or naive UTC (as models.utcnow)
    tags: Mapping[str, str] = field(default_factory=dict)  # the send's EmailTags
    configuration_set: str | None = None


def iso_timestamp(moment: datetime) -> str:
    """``2017-08-05T00:41:02.669Z``: SES's timestamp format (UTC, milliseconds)."""
    return f"{_naive_utc(moment).isoformat(timespec='milliseconds')}Z"


def mail_object(mail: AcceptedMail) -> Payload:
    """The ``mail`` object shared by every event of one email."""
    tags: dict[str, list[str]] = {name: [value] for name, value in mail.tags.items()}
    domain = mail.source.rpartition("@")[2].rstrip(">")
    tags["ses:from-domain"] = [domain]
    if mail.configuration_set:
        tags["ses:configuration-set"] = [mail.configuration_set]
    return {
        "timestamp": iso_timestamp(mail.sent_at),
        "source": mail.source,
        "sourceArn": f"arn:aws:ses:{REGION}:{ACCOUNT_ID}:identity/{domain}",
        "sendingAccountId": ACCOUNT_ID,
        "messageId": mail.message_id,
        "destination": list(mail.destination),
        "headersTruncated": False,
        "commonHeaders": {
            "from": [mail.source],
            "to": list(mail.destination),
            "messageId": mail.message_id,
        },
        "tags": tags,
    }


def send_event(mail: AcceptedMail) -> Payload:
    """``Send``: SES accepted the email and will try to deliver it."""
    return _send(mail_object(mail))


def delivery_event(mail: AcceptedMail, recipients: Sequence[str], at: datetime) -> Payload:
    """``Delivery``: the recipients' mail server accepted the email."""
    return _delivery(mail_object(mail), mail, recipients, at)


def bounce_event(
    mail: AcceptedMail, recipients: Sequence[str], at: datetime, sub_type: str = "General"
) -> Payload:
    """``Bounce`` (``Permanent``): ``General`` (no such user) or ``OnAccountSuppressionList``
    (SES did not even try: the address is on the account's suppression list)."""
    return _bounce(mail_object(mail), mail, recipients, at, sub_type)


def complaint_event(mail: AcceptedMail, recipients: Sequence[str], at: datetime) -> Payload:
    """``Complaint`` (``abuse``): a recipient marked the email as spam."""
    return _complaint(mail_object(mail), mail, recipients, at)


def outcome_events(
    mail: AcceptedMail, at: datetime, bounce_all: bool = False, opened: bool = False
) -> list[Payload]:
    """Every event SES would publish for ``mail``, in the order they happen.

    ``Send`` first; then one ``Delivery`` for the delivered recipients, one ``Bounce``
    per sub-type, one ``Complaint``, each naming its recipients (mailbox simulator
    outcomes, see ``mailbox_simulator_outcome``). Delivery, bounce and complaint happen
    at ``at``; a suppression-list bounce when SES accepted the email (it never tries).
    ``bounce_all`` turns every recipient that would have been delivered into a permanent
    bounce (a bounce rate's victims). The events share one ``mail`` object: serialise
    them, do not change them.
    """
    by_outcome: dict[MailboxOutcome, list[str]] = {}
    for address in mail.destination:
        outcome = mailbox_simulator_outcome(address)
        if bounce_all and outcome is not MailboxOutcome.SUPPRESSED:
            outcome = MailboxOutcome.BOUNCED
        by_outcome.setdefault(outcome, []).append(address)
    common = mail_object(mail)
    complained = by_outcome.get(MailboxOutcome.COMPLAINED, [])
    delivered = by_outcome.get(MailboxOutcome.DELIVERED, []) + complained
    events = [_send(common)]
    if suppressed := by_outcome.get(MailboxOutcome.SUPPRESSED):
        events.append(_bounce(common, mail, suppressed, mail.sent_at, SUPPRESSION_LIST))
    if delivered:
        events.append(_delivery(common, mail, delivered, at))
        if opened:
            events.append(_open(common, at))
    if bounced := by_outcome.get(MailboxOutcome.BOUNCED):
        events.append(_bounce(common, mail, bounced, at, "General"))
    if complained:
        events.append(_complaint(common, mail, complained, at))
    return events


def _send(common: Payload) -> Payload:
    return {"eventType": "Send", "mail": common, "send": {}}


def _delivery(
    common: Payload, mail: AcceptedMail, recipients: Sequence[str], at: datetime
) -> Payload:
    return {
        "eventType": "Delivery",
        "mail": common,
        "delivery": {
            "timestamp": iso_timestamp(at),
            "processingTimeMillis": _millis_between(mail.sent_at, at),
            "recipients": list(recipients),
            "smtpResponse": "250 2.6.0 Message received",
            "reportingMTA": REPORTING_MTA,
        },
    }


def _open(common: Payload, at: datetime) -> Payload:
    return {
        "eventType": "Open",
        "mail": common,
        "open": {
            "ipAddress": "192.0.2.1",  # TEST-NET-1: no one's address
            "timestamp": iso_timestamp(at),
            "userAgent": "Mozilla/5.0 (stand-in)",
        },
    }


def _bounce(
    common: Payload, mail: AcceptedMail, recipients: Sequence[str], at: datetime, sub_type: str
) -> Payload:
    if sub_type == SUPPRESSION_LIST:
        diagnostic = (
            "Amazon SES did not send the message to this address because it is on the "
            "suppression list for your account."
        )
    else:
        diagnostic = "smtp; 550 5.1.1 user unknown"
    return {
        "eventType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": sub_type,
            "bouncedRecipients": [
                {
                    "emailAddress": address,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": diagnostic,
                }
                for address in recipients
            ],
            "timestamp": iso_timestamp(at),
            "feedbackId": f"{mail.message_id}-bounce",
            "reportingMTA": f"dsn; {REPORTING_MTA}",
        },
        "mail": common,
    }


def _complaint(
    common: Payload, mail: AcceptedMail, recipients: Sequence[str], at: datetime
) -> Payload:
    return {
        "eventType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": address} for address in recipients],
            "timestamp": iso_timestamp(at),
            "feedbackId": f"{mail.message_id}-complaint",
            "userAgent": "Amazon SES Mailbox Simulator",
            "complaintFeedbackType": "abuse",
            "arrivalDate": iso_timestamp(at),
        },
        "mail": common,
    }


def sns_notification(
    message: str, topic_arn: str, message_id: str, at: datetime, signature: str
) -> Payload:
    """An SNS ``Notification`` envelope around ``message`` (an SES event's JSON text).

    ``signature`` is whatever the caller can vouch for: only SNS's own key makes a real
    one, and only the HTTPS endpoint checks it (an SQS subscription is trusted by IAM);
    ``SigningCertURL`` has SNS's form but names no real certificate.
    """
    region = topic_arn.split(":")[3] if topic_arn.count(":") >= 5 else REGION
    return {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": topic_arn,
        "Message": message,
        "Timestamp": iso_timestamp(at),
        "SignatureVersion": "1",
        "Signature": signature,
        "SigningCertURL": (
            f"https://sns.{region}.amazonaws.com/SimpleNotificationService-stand-in.pem"
        ),
    }


def raw_event_bodies(events: Sequence[Payload]) -> list[str]:
    """The SQS bodies of SNS raw message delivery: each SES event's JSON itself."""
    return [json.dumps(event, separators=(",", ":")) for event in events]


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _millis_between(start: datetime, end: datetime) -> int:
    elapsed = _naive_utc(end) - _naive_utc(start)
    return max(int(elapsed.total_seconds() * 1000), 0)
