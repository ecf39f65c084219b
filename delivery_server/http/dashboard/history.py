"""Sends per minute of a job, for the job page's chart, from samples of its sent count.

Like the API's rate (``http.api.rates``), the history is sampled rather than queried:
counting a big job's sends per minute from ``sent_at`` (which has no index) on every
poll would read every sent row of the job. Samples come from two places: each look at
a job's status block (its exact counts), and ``sample_processing_jobs``, which reads the
rows of every processing job every ``SAMPLE_SECONDS`` (one small query: the counts on a
job's row are the settler's, refreshed every few seconds), so that a job has a history
even when nobody watched it. The chart covers what this process saw: the minutes before
it started, or before the job was processing, have no bar.
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from delivery_server.models import JobStatus
from delivery_server.ports import Store

log = structlog.get_logger(__name__)

MINUTES = 30
SAMPLE_SECONDS = 10.0
MIN_GAP = 2.0  # samples closer than this replace the last one
MAX_JOBS = 200
MAX_SAMPLES = MINUTES * 60 // int(MIN_GAP) + 2
PROCESSING_PAGE = 100


@dataclass(frozen=True, slots=True)
class MinuteSends:
    """Emails sent in one minute (``None``: this process did not see that minute)."""

    start: datetime  # UTC
    sent: int | None


class SendHistory:
    """``(time, sent)`` samples per job over the last ``MINUTES`` minutes (bounded: the
    jobs sampled least recently are forgotten first)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._samples: OrderedDict[int, deque[tuple[float, int]]] = OrderedDict()

    def record(self, job_id: int, sent: int) -> None:
        now = self._clock()
        samples = self._samples.pop(job_id, None) or deque(maxlen=MAX_SAMPLES)
        if samples:
            # Counts on a job's row lag its exact counts: never let a sample go backwards.
            sent = max(sent, samples[-1][1])
            if now - samples[-1][0] < MIN_GAP:
                samples.pop()
        samples.append((now, sent))
        while samples and samples[0][0] < now - (MINUTES + 1) * 60:
            samples.popleft()
        self._samples[job_id] = samples
        while len(self._samples) > MAX_JOBS:
            self._samples.popitem(last=False)

    def per_minute(self, job_id: int) -> list[MinuteSends]:
        """The last ``MINUTES`` minutes, oldest first, the current (partial) one last."""
        now = self._clock()
        samples = list(self._samples.get(job_id, ()))
        times = [t for t, _ in samples]
        current = math.floor(now / 60) * 60
        minutes = []
        for start in (current - 60 * back for back in range(MINUTES - 1, -1, -1)):
            end = min(start + 60, now)
            sent = _sent_between(samples, times, start, end)
            minutes.append(MinuteSends(datetime.fromtimestamp(start, UTC), sent))
        return minutes


def _sent_between(
    samples: list[tuple[float, int]], times: list[float], start: float, end: float
) -> int | None:
    if not samples or samples[0][0] >= start + 60 or samples[-1][0] < start:
        return None  # before the first sample or after the last: not seen
    last = bisect_right(times, end) - 1  # the latest sample by the minute's end
    # The latest by its start; when the first sample falls inside the minute, count from it.
    first = max(bisect_right(times, start) - 1, 0)
    return samples[last][1] - samples[first][1]


async def sample_processing_jobs(
    store: Store, history: SendHistory, every: float = SAMPLE_SECONDS
) -> None:
    """Record every processing job's sent count every ``every`` seconds, until cancelled."""
    while True:
        try:
            for job in await store.job_page([JobStatus.PROCESSING], PROCESSING_PAGE):
                history.record(job.id, job.sent_count)
        except Exception as exc:  # the chart is no reason to stop serving
            log.warning("send_history_sample_failed", error=type(exc).__name__)
        await asyncio.sleep(every)


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    minute: MinuteSends


@dataclass(frozen=True, slots=True)
class Chart:
    """An SVG bar chart's geometry (the template draws it; no inline style needed)."""

    width: int
    height: int
    bars: list[Bar]
    peak: int
    latest: int | None  # the last complete minute
    seen: bool  # any minute with a bar at all


def send_chart(minutes: list[MinuteSends], width: int = 600, height: int = 150) -> Chart:
    """Bars scaled to the busiest minute."""
    peak = max((m.sent or 0 for m in minutes), default=0)
    slot = width / max(len(minutes), 1)
    bars = []
    for i, minute in enumerate(minutes):
        tall = 0.0 if not peak or not minute.sent else height * minute.sent / peak
        bars.append(Bar(i * slot + 1, height - tall, max(slot - 2, 1), tall, minute))
    complete = minutes[-2].sent if len(minutes) >= 2 else None
    return Chart(width, height, bars, peak, complete, any(m.sent is not None for m in minutes))
