"""A job's recent send rate and ETA, from samples of its progress taken as it is viewed.

The database has no cheap "emails settled in the last minute" for a job (no index on
``sent_at``, and counting a 500,000-email job's sent rows on every poll of a dashboard
would cost seconds). Instead each look at a job records ``(time, settled emails)``; the
rate is the change over the last minute of samples. Before there are samples ten seconds
apart, the rate is the average since the job started.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime

from delivery_server.models import JobStatus, utcnow

WINDOW = 60.0
MIN_SPAN = 10.0
MAX_JOBS = 1000


class JobRates:
    """Progress samples per job (bounded: the least recently viewed jobs are forgotten)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._samples: OrderedDict[int, deque[tuple[float, int]]] = OrderedDict()

    def rate(
        self, job_id: int, status: JobStatus, done: int, started_at: datetime | None
    ) -> tuple[float | None, str]:
        """Emails settled per second and the basis (``recent`` or ``since_start``);
        ``None`` when the job is not processing."""
        if status is not JobStatus.PROCESSING:
            self._samples.pop(job_id, None)
            return None, "recent"
        now = self._clock()
        samples = self._samples.pop(job_id, None) or deque()
        samples.append((now, done))
        while len(samples) > 2 and samples[1][0] <= now - WINDOW:
            samples.popleft()
        self._samples[job_id] = samples
        while len(self._samples) > MAX_JOBS:
            self._samples.popitem(last=False)
        first_at, first_done = samples[0]
        if now - first_at >= MIN_SPAN:
            return max(done - first_done, 0) / (now - first_at), "recent"
        if started_at is None:
            return None, "since_start"
        elapsed = (utcnow() - started_at).total_seconds()
        return (done / elapsed if elapsed > 0 else None), "since_start"


def eta_seconds(remaining: int, rate: float | None) -> float | None:
    """Seconds until the remaining emails are settled at ``rate``; None when not moving."""
    if remaining == 0:
        return 0.0
    if not rate:
        return None
    return remaining / rate
