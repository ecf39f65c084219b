"""The ports the core talks through: small Protocols with one adapter per backend.

The core (publisher, consumer, pipeline, renderer, retry, reconciler) imports only this
module, ``models`` and ``errors``; ``app`` (the composition root) is the one place that
picks adapters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import NamedTuple, Protocol

from delivery_server.api_tokens import ApiToken, AuditEntry, TokenScope
from delivery_server.email_listing import EmailFilter, EmailRow
from delivery_server.email_records import AttachmentDigest, FoundEmail, StoredRecipient
from delivery_server.mime import CheckedEmail
from delivery_server.models import (
    Attachment,
    AttachmentRef,
    BrakeCounts,
    ClaimResult,
    Delivery,
    DeliveryStatus,
    EmailStatus,
    EventOutcome,
    FailureKind,
    Job,
    JobPurge,
    JobStatus,
    JobSummary,
    NewEmail,
    QueueMessage,
    Suppression,
    Template,
    TrackingEvent,
)

# Publishes a batch of messages; returns the email ids whose message was NOT accepted.
PublishFn = Callable[[Sequence[QueueMessage]], Awaitable[set[int]]]


class Queue(Protocol):
    """A queue with SQS semantics: at-least-once, visibility timeouts, receive counts."""

    async def publish(self, messages: Sequence[QueueMessage]) -> set[int]:
        """Send messages (any number; adapters batch them). Return the email ids that failed."""
        ...

    async def receive(
        self, max_messages: int, wait_seconds: float, visibility_timeout: int
    ) -> list[Delivery]:
        """Long-poll for up to ``max_messages``; each stays invisible for the timeout."""
        ...

    async def delete(self, receipts: Sequence[str]) -> None:
        """Remove settled messages (adapters batch them)."""
        ...

    async def change_visibility(self, receipt: str, timeout_seconds: int) -> None:
        """Make a message visible again after ``timeout_seconds`` (0: now)."""
        ...

    async def backlog(self) -> int:
        """Approximate number of visible messages (what autoscaling watches)."""
        ...

    async def depth(self) -> int:
        """Approximate number of messages held in any state: visible, in flight (received,
        not yet deleted) and delayed. Every message of a queued email is among them."""
        ...


class Sender(Protocol):
    """Hands one rendered email to a provider, exactly one attempt per call.

    The email is a ``CheckedEmail``: its headers passed every check when it was made, so a
    sender writes them as they are and checks nothing again.
    """

    async def send(self, email: CheckedEmail) -> str:
        """Send and return the provider's message id; raise an ``errors`` class on failure."""
        ...

    async def max_send_rate(self) -> float | None:
        """The provider account's emails per second, or None when it has no such limit."""
        ...


class AttachmentLoader(Protocol):
    """Fetches attachment bytes from where an attachment reference points."""

    async def load(self, ref: AttachmentRef) -> Attachment:
        """Return the bytes; a refused or missing attachment is a ``PermanentError``."""
        ...


class PublisherStore(Protocol):
    """What the publisher and the job settler need from the database."""

    async def due_jobs(self, now: datetime) -> list[Job]:
        """Jobs in ``processing`` whose ``scheduled_at`` is empty or has passed. A job
        picked up for the first time starts: ``started_at`` is set and its template
        version pinned (the highest version of its template, any locale)."""
        ...

    async def publish_pending(self, job_id: int, limit: int, publish: PublishFn) -> int:
        """Lock up to ``limit`` pending emails of a job (skipping rows other publishers
        hold), mark them ``queued``, call ``publish`` and put the ones it could not
        publish back to ``pending``, all in one transaction. Return how many were queued.
        """
        ...

    async def settle_jobs(self, now: datetime) -> list[Job]:
        """Expire the unsent (pending, queued) emails of processing jobs whose
        ``send_by`` has passed, refresh the counts of processing jobs and finish those
        whose emails are all terminal (``completed``, or ``failed`` when any email
        failed or is unknown; expired ones are no failure). Return the jobs that
        finished."""
        ...

    async def restart_failed(
        self,
        job_ids: Sequence[int] | None,
        include_unknown: bool = False,
        *,
        transient_only: bool = False,
        error_contains: str | None = None,
    ) -> int:
        """Put failed (and, on request, unknown) emails back to ``pending`` with zero
        attempts and their jobs back to ``processing``; ``None`` means every job.
        ``transient_only`` leaves ``FailureKind.PERMANENT`` failures failed;
        ``error_contains`` takes only emails whose ``last_error`` contains that text
        (case-insensitive). Return how many emails were restarted."""
        ...


class EmailStore(Protocol):
    """What a consumer needs from the database for one email."""

    async def claim(self, email_id: int, lease_seconds: float) -> ClaimResult:
        """Move the email from ``queued`` to ``sending`` (only if its job is processing),
        add one attempt and a lease. Exactly one concurrent caller wins."""
        ...

    async def template(self, name: str, locale: str, as_of: int | None = None) -> Template | None:
        """The highest version of a template in a locale; with ``as_of``, the highest
        at or below it (what a job pinned at that version renders)."""
        ...

    async def mark_sent(
        self,
        email_id: int,
        provider_message_id: str,
        sent_at: datetime,
        template_version: int | None = None,
        segments: int | None = None,
    ) -> None:
        """Record a confirmed send, the template version that rendered it and, for a
        channel billed per part, how many parts it was sent as (an SMS's segments)."""
        ...

    async def mark_retry(self, email_id: int, error: str | None, count_attempt: bool) -> None:
        """Put a claimed email back to ``queued``; ``count_attempt=False`` gives the
        attempt back (throttling, paused account, shutdown before sending)."""
        ...

    async def mark_final(
        self,
        email_id: int,
        status: EmailStatus,
        error: str | None,
        template_version: int | None = None,
        *,
        kind: FailureKind | None = None,
    ) -> None:
        """Settle a claimed email as ``failed``, ``unknown`` or ``suppressed``, or as
        ``expired`` (its attempt given back: it never went out); ``template_version``
        is the version that rendered it, when it got that far. A failed one records
        its ``kind`` (``TRANSIENT`` when not given)."""
        ...

    async def mark_opted_out(self, email_id: int, error: str) -> None:
        """Settle a claimed email whose recipient opted out at the provider (nothing was
        sent) as ``suppressed``, its attempt given back, and put the recipient on the
        suppression list."""
        ...

    async def unqueue_paused(self, email_id: int) -> bool:
        """Put a ``queued`` email of a ``paused`` job back to ``pending``, so that its
        message can be dropped (the publisher publishes it again once the job is
        processing). False when the email is not queued or its job not paused."""
        ...


class ReconcilerStore(Protocol):
    """What the reconciler needs to find work that fell between the cracks."""

    async def expire_leases(self, now: datetime) -> int:
        """Turn ``sending`` emails whose lease has passed into ``unknown``; return how many."""
        ...

    async def stale_queued(self, older_than: datetime, limit: int) -> list[QueueMessage]:
        """Queued emails untouched since ``older_than`` (their message may be lost);
        touches them so the next pass does not pick them again at once."""
        ...

    async def count_queued(self, older_than: datetime) -> tuple[int, int]:
        """How many emails are ``queued`` (any job, any age), and how many of those were
        untouched since ``older_than``."""
        ...


class AdminStore(Protocol):
    """What the CLI (and later the HTTP API) does for people."""

    async def add_template(self, template: Template) -> Template:
        """Store a new version of a template (version = highest + 1 when 0)."""
        ...

    async def create_job(
        self,
        name: str,
        template_name: str,
        from_address: str,
        reply_to: str | None = None,
        scheduled_at: datetime | None = None,
        unsubscribe: bool = False,
        send_by: datetime | None = None,
        channel: str = "email",
        target: str | None = None,
        max_segments: int | None = None,
    ) -> Job:
        """Create a job in ``draft`` (``unsubscribe``: its emails carry one-click links;
        ``send_by``: emails not sent by then become ``expired``; ``channel``, ``target``:
        what and where it delivers through, DESIGN §12; ``max_segments``: an sms job's
        cap on segments per SMS, None for the setting's)."""
        ...

    async def add_emails(self, job_id: int, emails: Iterable[NewEmail]) -> int:
        """Insert a batch of pending emails; return how many."""
        ...

    async def set_job_status(
        self, job_id: int, status: JobStatus, expected: Sequence[JobStatus] | None = None
    ) -> Job:
        """Change a job's status (only from ``expected`` when given)."""
        ...

    async def job(self, job_id: int) -> Job:
        """One job; ``NotFoundError`` when there is none."""
        ...

    async def jobs(self, limit: int = 50) -> list[Job]:
        """The most recent jobs."""
        ...

    async def job_summary(self, job_id: int) -> JobSummary:
        """Counts by email status and the last errors."""
        ...

    async def cancel_job(self, job_id: int) -> int:
        """Cancel a job and its pending/queued emails; return how many emails."""
        ...

    async def templates(self) -> list[Template]:
        """The highest version of every template in every locale."""
        ...


class LiveInstances(NamedTuple):
    """The fleet as one heartbeat saw it: how many processes are alive (the beating one
    included), and the lowest of their instance ids (the one that counts the database
    gauges)."""

    live: int
    lowest: str


class FleetStore(Protocol):
    """Live sending processes, so that they can share one account-wide send rate and
    leave the database gauges to one of them."""

    async def heartbeat_instance(
        self, instance_id: str, now: datetime, expire_before: datetime
    ) -> LiveInstances:
        """Record this process as alive now, forget processes not seen since
        ``expire_before``, and return the live ones (this one included)."""
        ...

    async def lowest_live_instance(self, seen_since: datetime) -> str | None:
        """The lowest instance id seen since ``seen_since``; None when no process is."""
        ...

    async def remove_instance(self, instance_id: str) -> None:
        """Forget this process (clean shutdown: the others take over its share at once)."""
        ...


class TrackingStore(Protocol):
    """What the tracker, the reputation brake and the delivery gauge need from the
    database."""

    async def record_events(self, events: Sequence[TrackingEvent]) -> list[EventOutcome]:
        """Store each event once and apply it to its email, all in one transaction; one
        outcome per event, in order. An event is matched by its ``email_id`` tag, then by
        its provider message id. Applying it: the delivery status moves forward only, an
        ``Open``/``Click`` stamps ``opened_at``/``clicked_at``, a ``Send`` or ``Delivery``
        turns an ``unknown`` email ``sent`` (its job finishes as any other), and a
        permanent bounce or a complaint suppresses its recipients. An ``early`` event
        (its email has no send record yet) is not stored: the caller offers it again."""
        ...

    async def brake_counts(self, job_ids: Sequence[int]) -> dict[int, BrakeCounts]:
        """Sent emails, permanent bounces and complaints of each job that exists."""
        ...

    async def pause_job(self, job_id: int, reason: str) -> bool:
        """Pause a processing job, saying why (``paused_reason``); False when the job was
        not processing (already paused, finished, cancelled, or gone)."""
        ...

    async def count_by_delivery_status(self) -> dict[DeliveryStatus, int]:
        """Emails by delivery status (every status, zero when absent), over the jobs in
        flight or finished lately: what the ``delivery_emails_delivery`` gauge shows."""
        ...


class SuppressionStore(Protocol):
    """The suppression list, as operators and the unsubscribe endpoint change it."""

    async def add_suppressions(self, entries: Sequence[Suppression]) -> int:
        """Suppress addresses (normalised here too). An address already listed keeps its
        entry unless the new one lasts longer (an entry is never shortened: one that lasts
        forever stays). Return how many entries were added or lengthened."""
        ...

    async def unsubscribe_email(self, email_id: int) -> bool:
        """Suppress one email's address with reason ``unsubscribe`` (its one-click link
        was used); False when the email or its address is gone (purged)."""
        ...

    async def remove_suppressions(self, addresses: Sequence[str]) -> int:
        """Take addresses off the list; return how many were on it."""
        ...

    async def suppressions(self, limit: int, offset: int = 0) -> list[Suppression]:
        """A page of the list (expired entries included), newest first."""
        ...


class ConsoleStore(Protocol):
    """What the operator console (the HTTP API, ``tokens``) needs beyond ``AdminStore``."""

    async def add_api_token(self, name: str, scope: TokenScope, token_hash: str) -> ApiToken:
        """Store a token's hash under a name (a revoked token's name may be taken again;
        an active one's is a ``ConflictError``)."""
        ...

    async def api_token_by_hash(self, token_hash: str) -> ApiToken | None:
        """The token, active or revoked, whose hash this is."""
        ...

    async def touch_api_token(self, token_id: int, used_at: datetime) -> None:
        """Move the token's ``last_used_at`` forward to ``used_at``."""
        ...

    async def api_tokens(self) -> list[ApiToken]:
        """Every token, revoked ones included, by name."""
        ...

    async def revoke_api_token(self, name: str) -> bool:
        """Revoke the active token of that name; False when there is none."""
        ...

    async def record_audit(self, entry: AuditEntry) -> AuditEntry:
        """Write one entry of the audit trail; return it with its id and time."""
        ...

    async def audit_entries(
        self, limit: int, before_id: int | None = None, job_id: int | None = None
    ) -> list[AuditEntry]:
        """A page of the audit trail, newest first (older than ``before_id``)."""
        ...

    async def job_page(
        self, statuses: Sequence[JobStatus] | None, limit: int, before_id: int | None = None
    ) -> list[Job]:
        """Jobs newest first, of the given statuses (all when None), older than ``before_id``."""
        ...

    async def email_page(
        self, job_id: int, selected: EmailFilter, limit: int, after_id: int = 0
    ) -> list[EmailRow]:
        """A job's emails matching ``selected`` with ids above ``after_id``, in id order."""
        ...


class RetentionStore(Protocol):
    """What the retention pass (``db purge``, the server's daily pass) needs."""

    async def purgeable_jobs(self, finished_before: datetime) -> list[int]:
        """Completed, failed and cancelled jobs finished before ``finished_before`` whose
        emails are not purged yet (``purged_at`` empty), oldest first."""
        ...

    async def purge_job(
        self,
        job_id: int,
        finished_before: datetime,
        batch_size: int,
        keep_going: Callable[[], bool] | None = None,
    ) -> JobPurge:
        """Erase the addresses, variables and attachment refs of the job's emails,
        ``batch_size`` rows per transaction, while the job is still finished before
        ``finished_before`` (a restart stops it) and ``keep_going()`` says so; counts,
        statuses, times and message ids stay. Set ``purged_at`` once every email is."""
        ...


class LookupStore(Protocol):
    """What pre-flight (``jobs check``) and ``jobs find`` read and record."""

    async def recipients_page(
        self, job_id: int, statuses: Sequence[EmailStatus], after_id: int, limit: int
    ) -> list[StoredRecipient]:
        """Emails of the job in ``statuses`` with ids above ``after_id``, in id order, as
        stored (unchecked)."""
        ...

    async def record_attachment_digests(
        self, job_id: int, digests: Sequence[AttachmentDigest]
    ) -> int:
        """Store what pre-flight read of attachments (the audit trail); return how many."""
        ...

    async def emails_to(self, address: str, limit: int) -> list[FoundEmail]:
        """Up to ``limit`` emails to this address (normalised as suppression does), any
        job, newest first."""
        ...


class Store(
    PublisherStore,
    EmailStore,
    ReconcilerStore,
    AdminStore,
    FleetStore,
    TrackingStore,
    SuppressionStore,
    ConsoleStore,
    RetentionStore,
    LookupStore,
    Protocol,
):
    """Everything the database does; one adapter implements it for MySQL and SQLite."""

    async def count_by_status(self) -> tuple[dict[JobStatus, int], dict[EmailStatus, int]]:
        """Jobs by status, and the emails of the jobs in flight or recently finished by
        status, for metrics and readiness (its cost follows the active jobs)."""
        ...

    async def close(self) -> None:
        """Release the connection pool."""
        ...
