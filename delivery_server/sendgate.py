"""The send gate: an account-wide pause and a send rate, shared by every handler.

An ``AccountPausedError`` closes the gate for everyone (instead of each email burning its
attempts); throttling halves the rate, and successes bring it back up gradually
(additive increase, multiplicative decrease).
"""

from __future__ import annotations

import asyncio
import time

from delivery_server.retry import compute_backoff

ACCOUNT_PAUSE_SECONDS = 60.0
MAX_OUTAGE_PAUSE = 30.0


class SendGate:
    """A token bucket with an adaptive rate (``None`` = unlimited) and a pause switch."""

    def __init__(self, max_rate: float | None = None) -> None:
        self._max_rate = max_rate
        self._rate = max_rate
        self._tokens = 1.0
        self._updated = time.monotonic()
        self._paused_until = 0.0
        self._outages = 0  # unreachable answers since the last success
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float | None:
        return self._rate

    def set_max_rate(self, max_rate: float | None) -> None:
        """A new ceiling (the process's share of the fleet's rate changed). A rate that
        throttling has lowered stays lowered in proportion."""
        if max_rate is not None and self._rate is not None and self._max_rate:
            self._rate = max_rate * (self._rate / self._max_rate)
        else:
            self._rate = max_rate
        self._max_rate = max_rate

    def paused_for(self) -> float:
        """Seconds left in an account-wide pause (0 when sending is allowed)."""
        return max(0.0, self._paused_until - time.monotonic())

    def pause_account(self, seconds: float = ACCOUNT_PAUSE_SECONDS) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def on_unreachable(self) -> None:
        """The provider could not be reached: stop everyone for a growing while (1 s,
        2 s, 4 s … 30 s), so an outage costs a few probes, not the emails' attempts."""
        self._outages += 1
        self.pause_account(compute_backoff(self._outages, base=1.0, cap=MAX_OUTAGE_PAUSE))

    def on_throttled(self) -> None:
        if self._rate is not None:
            self._rate = max(1.0, self._rate / 2)

    def on_success(self) -> None:
        self._outages = 0
        # Recover by 1% of the ceiling per success: back from half in ~50 sends.
        if self._rate is not None and self._max_rate is not None and self._rate < self._max_rate:
            self._rate = min(self._max_rate, self._rate + self._max_rate * 0.01)

    async def wait_for_token(self) -> None:
        """Wait until a send is allowed under the pause and the current rate."""
        pause = self.paused_for()
        if pause > 0:
            await asyncio.sleep(pause)
        if self._rate is None:
            return
        async with self._lock:  # one waiter at a time keeps the bucket fair and simple
            while True:
                now = time.monotonic()
                rate = self._rate or 1.0
                # A bucket of one token: strict pacing, no burst after an idle spell, so
                # that the shares of several processes can never add up past the rate.
                self._tokens = min(1.0, self._tokens + (now - self._updated) * rate)
                self._updated = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / rate)
