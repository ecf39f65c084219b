"""Small helpers shared by the long-running loops."""

from __future__ import annotations

import asyncio


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` unless ``stop`` is set first; return True when stopping."""
    if stop.is_set():
        return True
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


class Backoff:
    """Bounded exponential backoff for a loop whose backend is failing (low CPU, resumes
    at full speed as soon as a call succeeds)."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0) -> None:
        self._initial = initial
        self._maximum = maximum
        self._current = initial

    def reset(self) -> None:
        self._current = self._initial

    def next_delay(self) -> float:
        delay = self._current
        self._current = min(self._current * 2, self._maximum)
        return delay
