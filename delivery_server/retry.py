"""Retry decisions as pure functions (DESIGN §4), unit-tested without any I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from delivery_server.errors import (
    AccountPausedError,
    PermanentError,
    ProviderUnreachableError,
    RetryableError,
    ThrottledError,
    UncertainSendError,
)

# SQS cannot hide a message for longer than 12 hours.
MAX_VISIBILITY_SECONDS = 43_200


class Action(StrEnum):
    """What to do with a claimed email after a failed attempt."""

    RETRY = "retry"  # back to queued, message hidden for a backoff delay
    FAIL = "fail"  # failed, message deleted
    UNKNOWN = "unknown"  # may have been sent: never resent blindly
    REQUEUE = "requeue"  # not an attempt (throttled, account paused): back to queued


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay: float = 0.0
    counts_attempt: bool = True


def backoff_delay(attempt: int, base_delay: float, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``attempt`` (1-based): base * 2**(attempt-1), with
    "equal jitter" (half fixed, half random) so a burst of failures spreads out but never
    comes back sooner than half the nominal delay."""
    nominal = min(base_delay * 2.0 ** max(attempt - 1, 0), float(MAX_VISIBILITY_SECONDS))
    rand: float = (rng or random).random()
    return nominal / 2 + rand * nominal / 2


def decide(
    error: BaseException,
    attempts: int,
    max_attempts: int,
    base_delay: float,
    rng: random.Random | None = None,
) -> Decision:
    """Decide the fate of an email whose attempt number ``attempts`` raised ``error``."""
    if isinstance(error, UncertainSendError):
        return Decision(Action.UNKNOWN)
    if isinstance(error, PermanentError):
        return Decision(Action.FAIL)
    if isinstance(error, ThrottledError | AccountPausedError | ProviderUnreachableError):
        # Not the email's fault: give the attempt back and try again a little later.
        return Decision(
            Action.REQUEUE, delay=backoff_delay(1, max(base_delay, 1.0), rng), counts_attempt=False
        )
    if isinstance(error, RetryableError) and attempts < max_attempts:
        return Decision(Action.RETRY, delay=backoff_delay(attempts, base_delay, rng))
    if isinstance(error, RetryableError):
        return Decision(Action.FAIL)
    # An unexpected exception is a bug or an unmapped vendor error: treat it as retryable
    # so that a transient surprise does not fail an email, but still bounded by attempts.
    if attempts < max_attempts:
        return Decision(Action.RETRY, delay=backoff_delay(attempts, base_delay, rng))
    return Decision(Action.FAIL)
