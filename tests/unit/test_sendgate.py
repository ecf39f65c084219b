import asyncio
import time

from delivery_server.sendgate import SendGate


async def test_an_unlimited_gate_never_waits() -> None:
    gate = SendGate()
    started = time.monotonic()
    for _ in range(1000):
        await gate.wait_for_token()
    assert time.monotonic() - started < 0.5


async def test_the_rate_paces_sends_without_a_burst() -> None:
    gate = SendGate(max_rate=50.0)
    started = time.monotonic()
    await asyncio.gather(*(gate.wait_for_token() for _ in range(21)))
    # One token up front, then 20 more at 50/s: at least 0.4 s, whatever the concurrency.
    assert time.monotonic() - started >= 0.38


def test_throttling_halves_the_rate_and_successes_recover_it_gradually() -> None:
    gate = SendGate(max_rate=100.0)
    gate.on_throttled()
    assert gate.rate == 50.0
    for _ in range(10):
        gate.on_success()
    assert gate.rate == 60.0
    for _ in range(100):
        gate.on_success()
    assert gate.rate == 100.0


def test_a_new_share_keeps_a_throttled_rate_in_proportion() -> None:
    gate = SendGate(max_rate=100.0)
    gate.on_throttled()
    gate.set_max_rate(20.0)
    assert gate.rate == 10.0


def test_an_account_pause_is_shared_and_ends() -> None:
    gate = SendGate()
    assert gate.paused_for() == 0
    gate.pause_account(30)
    assert 29 < gate.paused_for() <= 30


def test_an_unreachable_provider_pauses_everyone_with_a_growing_backoff() -> None:
    gate = SendGate()
    pauses = []
    for _ in range(8):
        gate.on_unreachable()
        pauses.append(round(gate.paused_for()))
    assert pauses[:3] == [1, 2, 4]
    assert max(pauses) == 30


def test_a_success_resets_the_outage_backoff() -> None:
    gate = SendGate()
    for _ in range(5):
        gate.on_unreachable()
    gate.on_success()
    fresh = SendGate()
    fresh.on_unreachable()
    gate._paused_until = 0.0  # the earlier pause has run out
    gate.on_unreachable()
    assert round(gate.paused_for()) == round(fresh.paused_for()) == 1
