"""The API's requests and answers about jobs and their emails, as pydantic models.

Requests forbid unknown fields (a misspelt filter is an error, not a silently ignored
one). Times in answers are UTC with an explicit offset; times in requests may carry any
offset (none means UTC) and are stored as naive UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

from delivery_server.email_listing import EmailRow
from delivery_server.errors import PermanentError
from delivery_server.mime import check_header, validate_address
from delivery_server.models import DeliveryStatus, EmailStatus, Job, JobStatus

MAX_ID = 2**63 - 1
MAX_EMAIL_PAGE = 1000
MAX_JOB_PAGE = 500


def _as_utc(value: datetime | None) -> datetime | None:
    """Naive UTC (as stored) → aware UTC, for answers."""
    return None if value is None else value.replace(tzinfo=UTC)


def _naive_utc(value: datetime) -> datetime:
    """Any offset (none: UTC) → naive UTC, as stored."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _mailbox(text: str) -> str:
    """``addr`` or ``Name <addr>``, checked as at send time; the error quotes nothing."""
    _, address = parseaddr(text)
    try:
        check_header("address", text)
        if not address:
            raise PermanentError("not an email address")
        validate_address(address)
    except PermanentError as exc:
        raise ValueError(str(exc).removeprefix("invalid recipient address: ")) from None
    return text.strip()


UtcTime = Annotated[
    datetime, PlainSerializer(lambda v: v.replace(tzinfo=UTC), return_type=datetime)
]
RequestTime = Annotated[datetime, AfterValidator(_naive_utc)]
Mailbox = Annotated[str, Field(min_length=3, max_length=320), AfterValidator(_mailbox)]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


# -- jobs ------------------------------------------------------------------------------


class JobsQuery(Request):
    status: JobStatus | None = Field(default=None, description="only jobs in this status")
    limit: int = Field(default=50, ge=1, le=MAX_JOB_PAGE)
    before: Id | None = Field(default=None, description="jobs older than this id (next_before)")


class JobOut(Answer):
    id: int
    name: str
    status: JobStatus
    template_name: str
    from_address: str
    reply_to: str | None
    scheduled_at: UtcTime | None
    created_at: UtcTime | None
    started_at: UtcTime | None
    finished_at: UtcTime | None
    total_count: int
    sent_count: int
    failed_count: int
    paused_reason: str | None
    unsubscribe: bool

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            id=job.id,
            name=job.name,
            status=job.status,
            template_name=job.template_name,
            from_address=job.from_address,
            reply_to=job.reply_to,
            scheduled_at=job.scheduled_at,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            total_count=job.total_count,
            sent_count=job.sent_count,
            failed_count=job.failed_count,
            paused_reason=job.paused_reason,
            unsubscribe=job.unsubscribe,
        )


class JobList(Answer):
    jobs: list[JobOut]
    next_before: int | None = Field(description="pass as ?before= for the next page; null: last")


class LastError(Answer):
    email_id: int
    error: str


class Progress(Answer):
    done: int = Field(description="emails in a final status")
    remaining: int = Field(description="emails pending, queued or being sent")
    rate_per_second: float | None = Field(description="emails settled per second lately")
    rate_basis: str = Field(description="'recent' (the last minute) or 'since_start'")
    eta_seconds: float | None = Field(description="remaining / rate; null when not moving")


class JobDetail(Answer):
    job: JobOut
    counts: dict[EmailStatus, int]
    delivery_counts: dict[DeliveryStatus, int]
    last_errors: list[LastError]
    progress: Progress


class JobAction(Answer):
    job: JobOut
    changed: bool = Field(description="false when the job already was in the wanted state")
    emails: int | None = Field(default=None, description="emails cancelled or restarted")


class RestartRequest(Request):
    include_unknown: bool = Field(
        default=False, description="also emails that may have been sent (could deliver twice)"
    )
    transient_only: bool = Field(
        default=False,
        description="leave failed the emails that failed permanently (they would fail again)",
    )


class JobForm(Request):
    """The form fields of a job upload (``multipart/form-data`` beside the file)."""

    template: str = Field(min_length=1, max_length=255)
    from_address: Mailbox
    name: str | None = Field(default=None, min_length=1, max_length=255)
    reply_to: Mailbox | None = None
    scheduled_at: RequestTime | None = None
    draft: bool = False
    strict: bool = Field(default=True, description="import nothing when any row is invalid")
    unsubscribe: bool = False


class InvalidRowOut(Answer):
    line: int
    reason: str


class JobCreated(Answer):
    job: JobOut
    imported: int
    invalid_count: int
    invalid: list[InvalidRowOut] = Field(description="the first 1,000 invalid rows")


# -- emails ----------------------------------------------------------------------------


class EmailsQuery(Request):
    status: EmailStatus | None = None
    delivery_status: DeliveryStatus | None = None
    limit: int = Field(default=100, ge=1, le=MAX_EMAIL_PAGE)
    after: int = Field(default=0, ge=0, le=MAX_ID, description="emails after this id (next_after)")


class ExportQuery(Request):
    status: EmailStatus | None = None
    delivery_status: DeliveryStatus | None = None


class EmailSearch(EmailsQuery):
    """A search by address: POSTed, so that no address travels in a URL."""

    address: str = Field(min_length=1, max_length=320, description="address prefix, any case")


class EmailOut(Answer):
    id: int
    to_address: str
    status: EmailStatus
    attempts: int
    delivery_status: DeliveryStatus | None
    delivery_detail: str | None
    last_error: str | None
    provider_message_id: str | None
    locale: str | None
    created_at: UtcTime | None
    updated_at: UtcTime | None
    sent_at: UtcTime | None
    delivery_updated_at: UtcTime | None

    @classmethod
    def of(cls, row: EmailRow) -> EmailOut:
        return cls(
            id=row.id,
            to_address=row.to_address,
            status=row.status,
            attempts=row.attempts,
            delivery_status=row.delivery_status,
            delivery_detail=row.delivery_detail,
            last_error=row.last_error,
            provider_message_id=row.provider_message_id,
            locale=row.locale,
            created_at=row.created_at,
            updated_at=row.updated_at,
            sent_at=row.sent_at,
            delivery_updated_at=row.delivery_updated_at,
        )


class EmailPage(Answer):
    emails: list[EmailOut]
    next_after: int | None = Field(description="pass as after for the next page; null: last")


# -- errors ----------------------------------------------------------------------------


class ErrorDetail(Answer):
    loc: list[str | int]
    msg: str


class ErrorAnswer(Answer):
    error: str
    detail: list[ErrorDetail] | None = None
    invalid_count: int | None = None
    invalid: list[InvalidRowOut] | None = None


def error_details(errors: list[Any]) -> list[ErrorDetail]:
    """pydantic's errors without their ``input``: what was sent may be personal data."""
    return [ErrorDetail(loc=list(e["loc"]), msg=e["msg"]) for e in errors]
