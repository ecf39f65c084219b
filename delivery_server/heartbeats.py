"""Liveness from heartbeats: each long-running loop beats after every iteration.

The core's loops beat here; the HTTP listener (``http.health``) only reads it, so the core
needs no web framework to report that it is alive.
"""

from __future__ import annotations

import time


class Heartbeats:
    """Each long-running loop beats after every iteration; a loop that stops beating for
    longer than its allowance makes the process unhealthy (ECS then replaces the task)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._allowance: dict[str, float] = {}

    def register(self, loop_name: str, allowance: float) -> None:
        self._allowance[loop_name] = allowance
        self._last[loop_name] = time.monotonic()

    def beat(self, loop_name: str) -> None:
        self._last[loop_name] = time.monotonic()

    def unregister(self, loop_name: str) -> None:
        self._allowance.pop(loop_name, None)
        self._last.pop(loop_name, None)

    def stale(self) -> list[str]:
        """Names of loops that missed their allowance."""
        now = time.monotonic()
        return [n for n, a in self._allowance.items() if now - self._last[n] > a]
