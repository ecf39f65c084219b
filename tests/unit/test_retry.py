import random

import pytest

from delivery_server.errors import (
    AccountPausedError,
    PermanentError,
    RetryableError,
    ThrottledError,
    UncertainSendError,
)
from delivery_server.retry import MAX_VISIBILITY_SECONDS, Action, backoff_delay, decide


def test_backoff_doubles_with_equal_jitter() -> None:
    rng = random.Random(7)
    for attempt, nominal in ((1, 30), (2, 60), (3, 120)):
        for _ in range(50):
            delay = backoff_delay(attempt, 30, rng)
            assert nominal / 2 <= delay <= nominal


def test_backoff_is_capped_by_sqs_visibility_limit() -> None:
    assert backoff_delay(40, 30, random.Random(1)) <= MAX_VISIBILITY_SECONDS


def test_retryable_errors_retry_until_the_last_attempt() -> None:
    assert decide(RetryableError("x"), 1, 3, 30).action is Action.RETRY
    assert decide(RetryableError("x"), 2, 3, 30).action is Action.RETRY
    assert decide(RetryableError("x"), 3, 3, 30).action is Action.FAIL


def test_permanent_errors_fail_at_once() -> None:
    assert decide(PermanentError("bad address"), 1, 3, 30).action is Action.FAIL


@pytest.mark.parametrize("error", [ThrottledError("slow"), AccountPausedError("paused")])
def test_throttling_and_pauses_do_not_count_as_attempts(error: Exception) -> None:
    decision = decide(error, 3, 3, 30)
    assert decision.action is Action.REQUEUE
    assert decision.counts_attempt is False
    assert decision.delay > 0


def test_uncertain_sends_become_unknown_never_retried() -> None:
    assert decide(UncertainSendError("timeout"), 1, 3, 30).action is Action.UNKNOWN


def test_unexpected_errors_are_retried_but_bounded() -> None:
    assert decide(KeyError("bug"), 1, 3, 30).action is Action.RETRY
    assert decide(KeyError("bug"), 3, 3, 30).action is Action.FAIL


def test_an_unreachable_provider_is_not_an_attempt() -> None:
    from delivery_server.errors import ProviderUnreachableError

    decision = decide(ProviderUnreachableError("refused"), 3, 3, 30)
    assert decision.action is Action.REQUEUE
    assert decision.counts_attempt is False
