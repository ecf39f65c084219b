"""Signals (``lifecycle.stop_on_signals``): SIGTERM sets the stop flag, and the handlers
that were installed before are back afterwards."""

from __future__ import annotations

import asyncio
import os
import signal
from types import FrameType

import pytest

from delivery_server.lifecycle import HANDLED_SIGNALS, stop_on_signals

pytestmark = pytest.mark.timeout(10)


async def test_sigterm_sets_the_stop_flag() -> None:
    stop = asyncio.Event()

    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 5)

    assert stop.is_set()


async def test_the_previous_handlers_are_restored() -> None:
    def earlier(signum: int, frame: FrameType | None) -> None:
        raise AssertionError("not called in this test")

    saved = {sig: signal.signal(sig, earlier) for sig in HANDLED_SIGNALS}
    try:
        with stop_on_signals(asyncio.Event()):
            assert all(signal.getsignal(sig) is not earlier for sig in HANDLED_SIGNALS)

        assert all(signal.getsignal(sig) is earlier for sig in HANDLED_SIGNALS)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
