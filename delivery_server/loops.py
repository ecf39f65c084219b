"""Small helpers shared by the long-running loops."""

from __future__ import annotations

import asyncio

from delivery_server.retry import compute_backoff


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
    at full speed as soon as a call succeeds): ``initial``, twice that, ... up to
    ``maximum``, without jitter (each loop probes only its own backend)."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0) -> None:
        self._initial = initial
        self._maximum = maximum
        self._failures = 0

    def reset(self) -> None:
        self._failures = 0

    def next_delay(self) -> float:
        self._failures += 1
        return compute_backoff(self._failures, base=self._initial, cap=self._maximum)
