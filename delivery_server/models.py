"""Domain records shared by the core and the adapters (plain data, no I/O)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any, Literal, NamedTuple

from delivery_server.errors import PermanentError


def utcnow() -> datetime:
    """Now, as a naive UTC datetime (how both MySQL and SQLite store it)."""
    return datetime.now(UTC).replace(tzinfo=None)


class JobStatus(StrEnum):
    """Life of a job (DESIGN §4)."""

    DRAFT = "draft"
    PROCESSING = "processing"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EmailStatus(StrEnum):
    """Life of one email (DESIGN §4)."""

    PENDING = "pending"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # not sent by its job's ``send_by``: never sent late, not an attempt
    UNKNOWN = "unknown"


ACTIVE_EMAIL_STATUSES = frozenset({EmailStatus.PENDING, EmailStatus.QUEUED, EmailStatus.SENDING})
TERMINAL_EMAIL_STATUSES = frozenset(set(EmailStatus) - ACTIVE_EMAIL_STATUSES)


# What retention leaves of an email's address (``delivery_email.to_address`` is NOT NULL).
ERASED_ADDRESS = ""


class FailureKind(StrEnum):
    """Why a ``failed`` email failed (``delivery_email.failure_kind``): what
    ``restart-failed --transient-only`` goes by."""

    PERMANENT = "permanent"  # a ``PermanentError``: it would fail the same way again
    TRANSIENT = "transient"  # its attempts ran out on retryable errors: may work later


@dataclass(frozen=True, slots=True)
class JobPurge:
    """What one retention pass did to one finished job's emails (``RetentionStore``)."""

    job_id: int
    erased: int  # emails whose address, variables and attachment refs were erased
    complete: bool  # every email erased and ``purged_at`` set; False: a later pass goes on


@dataclass(frozen=True, slots=True)
class Template:
    """One version of a template in one locale."""

    name: str
    locale: str
    version: int
    subject: str
    text_body: str
    html_body: str | None = None
    id: int | None = None
    created_at: datetime | None = None
    # What an ``sms`` job renders (DESIGN §12); an SMS-only template has an empty
    # subject and text body.
    sms_body: str | None = None


# Attachment URI schemes. Case matters: ``S3://`` is refused like any unknown scheme.
FILE_SCHEME = "file:"
S3_SCHEME = "s3://"


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    """Where an attachment lives: ``s3://bucket/key`` or ``file:relative/path``.

    The URI comes from upstream data, so it is hostile until its rules pass. They are
    here, once, for the import (``recipients``) and the loaders (``adapters``) alike: a
    ``file:`` path is relative (no leading ``/``, so no ``file://host/share`` either), has
    no ``..``, no NUL and no backslash; an ``s3://`` URI names a bucket and a key (taken
    literally). Errors never quote the URI: a path or key can hold a customer's name.
    """

    uri: str
    filename: str
    content_type: str = "application/octet-stream"

    @property
    def scheme(self) -> Literal["file", "s3"]:
        """Which loader the URI is for; any other scheme is a ``PermanentError``."""
        if self.uri.startswith(FILE_SCHEME):
            return "file"
        if self.uri.startswith(S3_SCHEME):
            return "s3"
        raise PermanentError("unsupported attachment uri scheme (use file: or s3://)")

    def file_path(self) -> PurePosixPath:
        """The checked relative path of a ``file:`` URI (no file system is looked at)."""
        if not self.uri.startswith(FILE_SCHEME):
            raise PermanentError("not a file: attachment uri")
        text = self.uri[len(FILE_SCHEME) :]
        path = PurePosixPath(text)
        if not path.parts or "\x00" in text or "\\" in text:
            raise PermanentError("invalid file attachment path")
        if text.startswith("/"):
            raise PermanentError("file attachment path must be relative")
        if ".." in path.parts:
            raise PermanentError(
                "file attachment path escapes the attachments directory "
                "('..' is refused: the path must stay inside the attachments directory)"
            )
        return path

    def s3_location(self) -> tuple[str, str]:
        """``(bucket, key)`` of an ``s3://bucket/key`` URI."""
        if not self.uri.startswith(S3_SCHEME):
            raise PermanentError("not an s3:// attachment uri")
        bucket, _, key = self.uri[len(S3_SCHEME) :].partition("/")
        if not bucket or not key:
            raise PermanentError("s3 attachment uri needs a bucket and a key (s3://bucket/key)")
        return bucket, key

    def check_uri(self) -> None:
        """Apply the rules of the URI's scheme: what its loader would refuse, refused now."""
        if self.scheme == "file":
            self.file_path()
        else:
            self.s3_location()

    @classmethod
    def from_json(cls, raw: Any) -> AttachmentRef:
        """Parse one attachment object; a malformed one is a permanent error."""
        if not isinstance(raw, dict):
            raise PermanentError("attachment must be an object with uri and filename")
        uri, filename = raw.get("uri"), raw.get("filename")
        content_type = raw.get("content_type", "application/octet-stream")
        if not isinstance(uri, str) or not uri:
            raise PermanentError("attachment has no uri")
        if not isinstance(filename, str) or not filename:
            raise PermanentError("attachment has no filename")
        if not isinstance(content_type, str) or "/" not in content_type:
            raise PermanentError("attachment content_type must look like type/subtype")
        return cls(uri=uri, filename=filename, content_type=content_type)

    def to_json(self) -> dict[str, str]:
        return {"uri": self.uri, "filename": self.filename, "content_type": self.content_type}


@dataclass(frozen=True, slots=True)
class Job:
    """A bulk send: one template, many emails."""

    id: int
    name: str
    status: JobStatus
    template_name: str
    from_address: str
    reply_to: str | None = None
    scheduled_at: datetime | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    total_count: int = 0
    sent_count: int = 0
    failed_count: int = 0
    paused_reason: str | None = None  # who or what paused it (the brake names its rates)
    unsubscribe: bool = False  # its emails carry one-click unsubscribe headers (RFC 8058)
    # The template version its emails render with, pinned when it starts (``as_of`` in
    # ``EmailStore.template``); None until then.
    template_version: int | None = None
    send_by: datetime | None = None  # emails not sent by then become ``expired``
    # What its emails are delivered through (DESIGN §12) and, for drops and webhooks,
    # where: the recipient value in ``to_address`` is read against it.
    channel: str = "email"
    target: str | None = None
    # An sms job's cap on segments per SMS; None: ``DELIVERY_SMS_MAX_SEGMENTS``.
    max_segments: int | None = None

    def deadline_passed(self, now: datetime) -> bool:
        """Whether it is too late to send its emails (``send_by`` has come)."""
        return self.send_by is not None and now >= self.send_by


@dataclass(frozen=True, slots=True)
class Email:
    """One recipient of a job, with its own variables and attachments."""

    id: int
    job_id: int
    to_address: str
    variables: dict[str, Any]
    status: EmailStatus
    attempts: int = 0
    locale: str | None = None
    attachments: tuple[AttachmentRef, ...] = ()
    last_error: str | None = None
    provider_message_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    sent_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewEmail:
    """An email as registered by the CLI or an upstream system, before it has an id."""

    to_address: str
    variables: dict[str, Any] = field(default_factory=dict)
    locale: str | None = None
    attachments: tuple[AttachmentRef, ...] = ()


@dataclass(frozen=True, slots=True)
class ClaimedEmail:
    """An email this process now holds (status ``sending``), with its job."""

    email: Email
    job: Job


class ClaimOutcome(StrEnum):
    """Why a claim did or did not succeed."""

    CLAIMED = "claimed"
    NOT_QUEUED = "not_queued"  # someone else has it, or it is already done: drop the message
    JOB_PAUSED = "job_paused"  # keep the message for later, without using an attempt
    JOB_INACTIVE = "job_inactive"  # cancelled/finished job: drop the message
    MISSING = "missing"  # no such email: drop the message
    SUPPRESSED = "suppressed"  # its address is on the suppression list: now final, drop
    EXPIRED = "expired"  # its job's send_by has passed: now final (not an attempt), drop


@dataclass(frozen=True, slots=True)
class ClaimResult:
    outcome: ClaimOutcome
    claimed: ClaimedEmail | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """Attachment bytes, ready to go into a MIME message."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """A fully rendered email, ready for a sender."""

    from_address: str
    to_address: str
    subject: str
    text_body: str
    html_body: str | None = None
    reply_to: str | None = None
    attachments: tuple[Attachment, ...] = ()
    # Ids for providers that can tag messages (never personal data).
    email_id: int | None = None
    job_id: int | None = None
    # Headers the job asks for beyond the usual ones (the one-click unsubscribe pair).
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """The queue message of DESIGN §5: ids only (claim-check)."""

    email_id: int
    job_id: int

    def to_body(self) -> str:
        return json.dumps({"v": 1, "email_id": self.email_id, "job_id": self.job_id})

    @classmethod
    def from_body(cls, body: str) -> QueueMessage:
        """Decode a message body; anything but a v1 message is a permanent error."""
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise PermanentError("queue message is not JSON") from exc
        if not isinstance(data, dict) or data.get("v") != 1:
            raise PermanentError("queue message is not version 1")
        email_id, job_id = data.get("email_id"), data.get("job_id")
        if type(email_id) is not int or type(job_id) is not int:
            raise PermanentError("queue message needs integer email_id and job_id")
        return cls(email_id=email_id, job_id=job_id)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One received queue message and the handle to settle it with."""

    body: str
    receipt: str
    receive_count: int = 1


@dataclass(frozen=True, slots=True)
class ErrorGroup:
    """A job's settled problem emails whose ``last_error`` falls in one class."""

    error_class: str  # email_records.error_class: addresses and ids replaced
    count: int
    example_email_id: int  # the newest of them


@dataclass(frozen=True, slots=True)
class JobSummary:
    """What ``jobs show`` tells an operator."""

    job: Job
    counts: dict[EmailStatus, int]
    last_errors: list[tuple[int, str]]
    # Emails by what the recipient's side reported (those with no report yet are absent).
    delivery_counts: dict[DeliveryStatus, int] = field(default_factory=dict)
    # Failed, unknown and suppressed emails by error class, the largest class first.
    error_groups: list[ErrorGroup] = field(default_factory=list)


class DeliveryStatus(StrEnum):
    """What the recipient's side reported after the send (DESIGN §3); apart from ``status``."""

    DELAYED = "delayed"
    DELIVERED = "delivered"
    REJECTED = "rejected"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class SuppressionReason(StrEnum):
    """Why an address must not be mailed again (DESIGN §3)."""

    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class TrackingEvent:
    """One SES event (``Send``, ``Delivery``, ``Bounce``, ...), unwrapped from its envelope.

    ``recipients`` are the addresses SES names (for suppression only: personal data, never
    logged, not part of ``detail``). ``detail`` is what is stored as the event's JSON: the
    type-specific facts (bounce type and sub-type, SMTP diagnostic, complaint feedback
    type, delay type, link host), no recipient data beyond what SES sent.
    """

    event_type: str
    provider_message_id: str
    occurred_at: datetime  # naive UTC, as utcnow()
    email_id: int | None = None
    job_id: int | None = None
    recipients: tuple[str, ...] = ()
    bounce_type: str | None = None  # Permanent | Transient | Undetermined (Bounce only)
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Suppression:
    """One entry of the suppression list."""

    address: str  # normalised (see suppression.normalise_address)
    reason: SuppressionReason
    created_at: datetime | None = None
    expires_at: datetime | None = None  # None: forever
    note: str | None = None


class EventOutcome(StrEnum):
    """What recording one tracking event did."""

    RECORDED = "recorded"  # stored, and its effects on the email applied
    DUPLICATE = "duplicate"  # stored before (a redelivery): nothing done
    UNMATCHED = "unmatched"  # no such email: stored without one, counted
    EARLY = "early"  # its email's send record is not there yet: not stored, try later


class BrakeCounts(NamedTuple):
    """What the reputation brake judges a job on."""

    sent: int  # emails sent (the rates' denominator)
    bounced: int  # emails that bounced permanently
    complained: int  # emails whose recipient complained
