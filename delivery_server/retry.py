"""Retry decisions as pure functions (DESIGN §4), unit-tested without any I/O.

``compute_backoff`` is the one exponential backoff of the code base: the email retries,
the loops whose backend is failing, the store's write and contention retries, the SQS
calls and the send gate's outage pause all take their delays from it. ``retry_until``
is the one loop that calls again after a failure until attempts or time run out.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from delivery_server.errors import (
    AccountPausedError,
    PermanentError,
    ProviderUnreachableError,
    RetryableError,
    ThrottledError,
    UncertainSendError,
)

T = TypeVar("T")

# SQS cannot hide a message for longer than 12 hours.
MAX_VISIBILITY_SECONDS = 43_200
# 2**32 times any base is past every cap in use; the bound keeps a long outage's
# failure count from overflowing a float.
_MAX_EXPONENT = 32


class Jitter(StrEnum):
    """How much of a backoff delay is random."""

    NONE = "none"  # exactly the nominal delay: one process probing its own backend
    EQUAL = "equal"  # half fixed, half random: spread out, but never sooner than half
    FULL = "full"  # anywhere from 0 to nominal: many clients contending for one thing


def compute_backoff(
    attempt: int,
    *,
    base: float,
    cap: float = math.inf,
    jitter: Jitter = Jitter.NONE,
    rng: Callable[[], float] | None = None,
) -> float:
    """Seconds to wait after failure number ``attempt`` (1-based): ``base * 2**(attempt-1)``,
    at most ``cap``, then jittered by ``rng`` (a float in [0, 1), ``random.random`` when
    not given)."""
    if attempt < 1:
        raise ValueError(f"backoff attempt numbers start at 1, not {attempt}")
    nominal = min(base * 2.0 ** min(attempt - 1, _MAX_EXPONENT), cap)
    if jitter is Jitter.NONE:
        return nominal
    rand = (rng or random.random)()
    if jitter is Jitter.EQUAL:
        return nominal / 2 + rand * nominal / 2
    return rand * nominal


async def retry_until(
    call: Callable[[], Awaitable[T]],
    *,
    retry_on: Callable[[Exception], bool],
    delay: Callable[[int], float],
    attempts: int | None = None,
    within: float | None = None,
    on_retry: Callable[[Exception, float], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Await ``call()`` until it returns. After a failure that ``retry_on`` accepts, wait
    ``delay(n)`` (n = failures so far) and call again, unless that would be call number
    ``attempts + 1`` or would start later than ``within`` seconds after the first call:
    then, as for any other failure, the error is raised. ``on_retry(error, delay)`` is
    told of each retry (to log it)."""
    if attempts is not None and attempts < 1:
        raise ValueError(f"retry attempts must be at least 1, not {attempts}")
    give_up = math.inf if within is None else clock() + within
    failures = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            failures += 1
            if not retry_on(exc) or (attempts is not None and failures >= attempts):
                raise
            wait = delay(failures)
            if clock() + wait > give_up:
                raise
            if on_retry is not None:
                on_retry(exc, wait)
            await sleep(wait)


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
    """Seconds before retry number ``attempt`` (1-based) of an email: base * 2**(attempt-1)
    up to what SQS can hide, with equal jitter, so a burst of failures spreads out but
    never comes back sooner than half the nominal delay."""
    return compute_backoff(
        max(attempt, 1),
        base=base_delay,
        cap=float(MAX_VISIBILITY_SECONDS),
        jitter=Jitter.EQUAL,
        rng=(rng or random).random,
    )


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
