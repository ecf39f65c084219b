"""The error tree of delivery-server, documented in one place.

Adapters translate vendor errors (botocore, SMTP, database drivers) into these classes;
the core decides what to do from the class alone:

``DeliveryError``
    Base of everything below.
``ConfigError``
    A bad or missing setting. The CLI prints it on one line and exits with code 2.
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
``UncertainSendError``
    The send request may have reached the provider but no answer came back (a read
    timeout or a dropped connection after the request was written). The email becomes
    ``unknown``: resending it blindly could deliver it twice.
"""

from __future__ import annotations

from typing import Literal


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


class MalformedEventError(PermanentError):
    """An SES event message that cannot be read (not JSON, too large, no ``mail.messageId``).

    Redelivering it cannot help; the message names what was wrong and never repeats the
    payload (it carries recipient addresses).
    """


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
