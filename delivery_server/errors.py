"""The error tree of delivery-server: every class it raises on purpose, defined here.

Adapters translate vendor errors (botocore, SMTP, database drivers) into these classes;
the core decides what to do from the class alone, and the CLI maps them onto exit codes
(2 for ``ConfigError`` and ``UsageError``, 1 for every other one, with its message)::

    DeliveryError
        ConfigError                 a bad or missing setting, named in the message
        UsageError                  command arguments that cannot work together
            TargetRefusedError      a channel's --target the settings do not allow
        NotFoundError               no such job, template or email
        PermanentError              retrying cannot help: the email fails at once
            ConflictError           an admin action the current state forbids
            MalformedEventError     an SES event message that cannot be read
            RecipientOptedOutError  the recipient opted out at the provider: suppressed
        RetryableError              transient: costs one attempt, then backoff
            ProviderUnreachableError    nothing left: not an attempt, sending pauses
        ThrottledError              slow down: not an attempt
        AccountPausedError          the account cannot send: not an attempt, all pause
        UncertainSendError          may have been sent: the email becomes unknown
        TemplateFileError           a template file that cannot be read or compiled
        RecipientsFileError         a recipients file that cannot be read as a whole
        JobImportError              an import that stopped; carries its report
            ImportRefusedError      nothing was written
            ImportAbortedError      broke off part-way; the job was cancelled
        DemoDirectoryError          the demo's directory holds files it did not write
        InvalidTokenError           an unsubscribe token, malformed or not ours
        SnsMessageRefused           an SNS message to /ses/events, not accepted

What a send's error means for the email (``retry.decide``):

``RetryableError``
    A transient failure of one email's send (5xx, timeout, connection reset). Costs one
    attempt; retried with exponential backoff until ``max_attempts``, then ``failed``.
``PermanentError``
    Retrying cannot help (invalid address, missing template variable, message rejected,
    header injection, attachment refused). The email fails at once.
``ProviderUnreachableError`` (a ``RetryableError``)
    The provider could not be reached at all (connection refused, DNS, connect timeout):
    no byte of the email left. Not the email's fault, so not an attempt: every consumer
    pauses sending with a growing backoff (a circuit breaker) and resumes when it answers.
``ThrottledError``
    The provider asked us to slow down. Not an attempt: the email goes back to the queue
    and the sender slows down.
``AccountPausedError``
    Sending is stopped for the whole account (SES sending paused, account suspended).
    Not an attempt: every consumer pauses instead of burning attempts.
``RecipientOptedOutError`` (a ``PermanentError``)
    The provider keeps the recipient on its own opt-out list (SNS for SMS): the email
    becomes ``suppressed``, never sent and not an attempt, and the recipient goes on our
    suppression list.
``UncertainSendError``
    The send request may have reached the provider but no answer came back (a read
    timeout or a dropped connection after the request was written). The email becomes
    ``unknown``: resending it blindly could deliver it twice.

Messages never quote personal data (addresses, variables, paths or keys holding names):
they end up in logs and in ``last_error``.
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

__all__ = [
    "AccountPausedError",
    "ConfigError",
    "ConflictError",
    "DeliveryError",
    "DemoDirectoryError",
    "ImportAbortedError",
    "ImportRefusedError",
    "InvalidTokenError",
    "JobImportError",
    "MalformedEventError",
    "NotFoundError",
    "PermanentError",
    "ProviderUnreachableError",
    "RecipientOptedOutError",
    "RecipientsFileError",
    "RetryableError",
    "SnsMessageRefused",
    "SnsRefusal",
    "TargetRefusedError",
    "TemplateFileError",
    "ThrottledError",
    "UncertainSendError",
    "UsageError",
]

# What an import error carries: ``job_import.ImportReport`` (a type variable, so that this
# module imports nothing of ours and stays free of cycles).
ReportT = TypeVar("ReportT")


class DeliveryError(Exception):
    """Base class of every error delivery-server raises on purpose."""


class ConfigError(DeliveryError):
    """A setting is missing or invalid; the message names the setting."""


class NotFoundError(DeliveryError):
    """A job, template or email that was asked for does not exist."""


class RetryableError(DeliveryError):
    """A transient failure: costs one attempt, then retried with backoff."""


class ProviderUnreachableError(RetryableError):
    """The provider could not be reached; nothing was sent; not counted as an attempt."""


class PermanentError(DeliveryError):
    """Retrying cannot help: the email fails at once."""


class ThrottledError(DeliveryError):
    """The provider asks us to slow down; not counted as an attempt."""


class AccountPausedError(DeliveryError):
    """Sending is stopped for the whole account; not counted as an attempt."""


class UncertainSendError(DeliveryError):
    """The provider may have accepted the email but we could not confirm it."""


class UsageError(DeliveryError):
    """A command was called with arguments that cannot work together (exit code 2)."""


class TargetRefusedError(UsageError):
    """A job's ``--target`` (or ``--channel``) that the settings do not allow; the message
    names the setting (``DELIVERY_WEBHOOK_HOSTS``, ``DELIVERY_DROP_S3_BUCKETS``, …)."""


class ConflictError(PermanentError):
    """An admin action that the current state forbids, or that lost a race with another
    change: resuming a cancelled job, cancelling a completed one, a job whose status
    changed in between, a template version that already exists. Retrying the same
    action cannot help; the message says what the state is (CLI exit code 1)."""


class TemplateFileError(DeliveryError):
    """A template file cannot be read, has unknown keys, or does not compile."""


class RecipientsFileError(DeliveryError):
    """The recipients file as a whole cannot be read (not a bad row)."""


class JobImportError(DeliveryError, Generic[ReportT]):
    """Importing a recipients file stopped; ``report`` says what was read and refused."""

    def __init__(self, message: str, report: ReportT) -> None:
        super().__init__(message)
        self.report = report


class ImportRefusedError(JobImportError[ReportT]):
    """Nothing was written (``--strict`` and bad rows, or no valid row at all)."""


class ImportAbortedError(JobImportError[ReportT]):
    """The import failed part-way; the message says what became of the job."""


class DemoDirectoryError(DeliveryError):
    """The demo's output directory holds files the demo did not write."""


class MalformedEventError(PermanentError):
    """An SES event message that cannot be read (not JSON, too large, no ``mail.messageId``).

    Redelivering it cannot help; the message names what was wrong and never repeats the
    payload (it carries recipient addresses).
    """


class RecipientOptedOutError(PermanentError):
    """The recipient is on the provider's own opt-out list (SNS's, for SMS): nothing was
    sent. The email becomes ``suppressed`` and the recipient goes on the suppression
    list; a pipeline that does not know this class fails the email at once (permanent)."""


class InvalidTokenError(DeliveryError):
    """An unsubscribe token that is malformed or was not signed with our secret."""


SnsRefusal = Literal[
    "malformed",
    "forged",
    "refused_topic",
    "refused_cert_url",
    "refused_subscribe_url",
    "expired",
    "unavailable",
]


class SnsMessageRefused(DeliveryError):
    """A message SNS POSTed to ``/ses/events`` that was not accepted; nothing was recorded.

    ``outcome`` says why, as the metric counts it: ``malformed`` (not an SNS message),
    ``forged`` (unsigned, or its signature or certificate does not verify),
    ``refused_topic``, ``refused_cert_url``, ``refused_subscribe_url``, ``expired`` (older
    than the accepted age, or from the future), or ``unavailable`` (AWS could not be
    reached to check or confirm it: SNS delivers it again). The text names the field at
    fault and never repeats its value.
    """

    def __init__(self, outcome: SnsRefusal, reason: str) -> None:
        super().__init__(reason)
        self.outcome: SnsRefusal = outcome
