"""The one backoff (``retry.compute_backoff``) and the one retry loop
(``retry.retry_until``), on an injected clock and sleep: no test waits for real."""

from __future__ import annotations

import math

import pytest

from delivery_server.loops import Backoff
from delivery_server.retry import Jitter, compute_backoff, retry_until

pytestmark = pytest.mark.timeout(10)


def test_the_delay_doubles_from_the_base_up_to_the_cap() -> None:
    delays = [compute_backoff(n, base=0.5, cap=30.0) for n in range(1, 10)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_without_a_cap_it_keeps_doubling() -> None:
    assert compute_backoff(5, base=0.02) == pytest.approx(0.32)


@pytest.mark.parametrize(
    ("jitter", "rand", "expected"),
    [
        (Jitter.NONE, 0.0, 8.0),
        (Jitter.EQUAL, 0.0, 4.0),  # never sooner than half the nominal delay
        (Jitter.EQUAL, 0.5, 6.0),
        (Jitter.FULL, 0.0, 0.0),
        (Jitter.FULL, 0.25, 2.0),
    ],
)
def test_jitter_scales_the_nominal_delay(jitter: Jitter, rand: float, expected: float) -> None:
    assert compute_backoff(4, base=1.0, jitter=jitter, rng=lambda: rand) == expected


def test_jitter_is_applied_after_the_cap() -> None:
    # botocore's standard mode: random x min(20, 2**(attempt - 1)).
    assert compute_backoff(10, base=1.0, cap=20.0, jitter=Jitter.FULL, rng=lambda: 0.5) == 10.0


def test_a_long_outage_does_not_overflow() -> None:
    assert compute_backoff(100_000, base=1.0, cap=30.0) == 30.0
    assert math.isfinite(compute_backoff(100_000, base=1.0))


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1, not 0"):
        compute_backoff(0, base=1.0)


def test_a_loops_backoff_grows_to_its_maximum_and_starts_over_after_a_success() -> None:
    backoff = Backoff(maximum=4.0)

    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


class Flaky:
    """A call that fails ``failures`` times with ``error``, then returns "done"."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.left = failures
        self.error = error or ConnectionError("away")
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.left > 0:
            self.left -= 1
            raise self.error
        return "done"


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def doubling(failures: int) -> float:
    return compute_backoff(failures, base=0.1, cap=2.0)


def connection_errors(exc: Exception) -> bool:
    return isinstance(exc, ConnectionError)


async def test_a_retried_call_returns_once_it_succeeds_after_the_backoff_delays() -> None:
    time = FakeTime()
    call = Flaky(3)

    result = await retry_until(
        call, retry_on=connection_errors, delay=doubling, sleep=time.sleep, clock=time.clock
    )

    assert result == "done"
    assert call.calls == 4
    assert time.slept == [0.1, 0.2, 0.4]


async def test_attempts_bound_the_number_of_calls() -> None:
    time = FakeTime()
    call = Flaky(10)

    with pytest.raises(ConnectionError):
        await retry_until(
            call,
            retry_on=connection_errors,
            delay=doubling,
            attempts=5,
            sleep=time.sleep,
            clock=time.clock,
        )

    assert call.calls == 5
    assert len(time.slept) == 4


async def test_it_gives_up_rather_than_start_a_call_past_the_deadline() -> None:
    time = FakeTime()
    call = Flaky(100)

    with pytest.raises(ConnectionError):
        await retry_until(
            call,
            retry_on=connection_errors,
            delay=doubling,
            within=3.0,
            sleep=time.sleep,
            clock=time.clock,
        )

    # 0.1 + 0.2 + 0.4 + 0.8 = 1.5 s; another 1.6 s would end at 3.1 s: past 3 s.
    assert time.slept == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert call.calls == 5


async def test_errors_it_is_not_told_to_retry_pass_through_at_once() -> None:
    time = FakeTime()
    call = Flaky(1, KeyError("bug"))

    with pytest.raises(KeyError):
        await retry_until(
            call, retry_on=connection_errors, delay=doubling, sleep=time.sleep, clock=time.clock
        )

    assert call.calls == 1
    assert time.slept == []


async def test_each_retry_is_reported_with_its_delay() -> None:
    time = FakeTime()
    seen: list[tuple[str, float]] = []

    await retry_until(
        Flaky(2),
        retry_on=connection_errors,
        delay=doubling,
        on_retry=lambda exc, delay: seen.append((type(exc).__name__, delay)),
        sleep=time.sleep,
        clock=time.clock,
    )

    assert seen == [("ConnectionError", 0.1), ("ConnectionError", 0.2)]


async def test_a_call_that_never_fails_is_made_once_without_sleeping() -> None:
    time = FakeTime()
    call = Flaky(0)

    result = await retry_until(
        call, retry_on=connection_errors, delay=doubling, sleep=time.sleep, clock=time.clock
    )

    assert result == "done"
    assert call.calls == 1
    assert time.slept == []


async def test_attempts_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1, not 0"):
        await retry_until(Flaky(0), retry_on=connection_errors, delay=doubling, attempts=0)
