"""The API's pure pieces: the failed-attempt limit, the job rate, token minting."""

from __future__ import annotations

from delivery_server.api_tokens import (
    hashes_match,
    looks_like_token,
    mint_token,
    token_hash,
    valid_token_name,
)
from delivery_server.http.api.auth import FailedAttempts
from delivery_server.http.api.rates import JobRates, eta_seconds
from delivery_server.models import JobStatus


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_block_a_client_for_the_rest_of_the_window() -> None:
    clock = Clock()
    attempts = FailedAttempts(max_failures=3, window=60, clock=clock)
    for _ in range(2):
        attempts.failed("10.0.0.1")
    assert attempts.blocked_for("10.0.0.1") == 0
    attempts.failed("10.0.0.1")
    assert attempts.blocked_for("10.0.0.1") == 60
    assert attempts.blocked_for("10.0.0.2") == 0  # per client
    clock.now += 30
    assert attempts.blocked_for("10.0.0.1") == 30
    clock.now += 30
    assert attempts.blocked_for("10.0.0.1") == 0


def test_tracked_clients_are_bounded() -> None:
    attempts = FailedAttempts(max_failures=1, window=60, max_clients=2, clock=Clock())
    for client in ("a", "b", "c"):
        attempts.failed(client)
    assert attempts.blocked_for("a") == 0  # forgotten first
    assert attempts.blocked_for("b") > 0
    assert attempts.blocked_for("c") > 0


def test_rate_is_recent_once_samples_span_ten_seconds() -> None:
    clock = Clock()
    rates = JobRates(clock=clock)
    rate, basis = rates.rate(1, JobStatus.PROCESSING, 0, None)
    assert (rate, basis) == (None, "since_start")
    clock.now += 20
    rate, basis = rates.rate(1, JobStatus.PROCESSING, 400, None)
    assert (rate, basis) == (20.0, "recent")
    assert rates.rate(1, JobStatus.PAUSED, 400, None) == (None, "recent")
    assert eta_seconds(100, 20.0) == 5.0
    assert eta_seconds(0, None) == 0.0
    assert eta_seconds(5, None) is None


def test_tokens_are_random_and_stored_as_hashes() -> None:
    first, first_hash = mint_token()
    second, _ = mint_token()
    assert first != second
    assert looks_like_token(first)
    assert first not in first_hash
    assert hashes_match(token_hash(first), first_hash)
    assert not hashes_match(token_hash(second), first_hash)
    assert not looks_like_token("Bearer x")
    assert valid_token_name("ci-bot.2")
    assert not valid_token_name("-x")
    assert not valid_token_name("a b")
