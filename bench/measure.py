"""What a benchmark run costs: wall time, CPU seconds of a process tree, peak RSS.

CPU is this process plus every descendant: those already reaped come from ``os.times()``
(children's fields), those still alive from psutil. Peak RSS is the largest sum of the
tree's resident sets seen by a sampler thread (10 Hz), so run a peer's worker processes
as children of the measuring process.

Service CPU (MariaDB, Redis) is reported separately: the peers lean on them differently
(Celery's broker is Redis), and a fair comparison shows both.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from types import TracebackType

import psutil

SAMPLE_INTERVAL = 0.1
SERVICE_NAMES = ("mariadbd", "mysqld", "redis-server")


@dataclass(frozen=True, slots=True)
class Usage:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    service_cpu_s: dict[str, float]


def _service_processes() -> dict[str, psutil.Process]:
    found: dict[str, psutil.Process] = {}
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"]
        if name in SERVICE_NAMES:
            found[f"{name}:{proc.pid}"] = proc
    return found


def _cpu(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


class ResourceMeter:
    """``with ResourceMeter() as meter: ...``, then ``meter.usage``."""

    def __init__(self) -> None:
        self._me = psutil.Process(os.getpid())
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._peak_rss = 0
        self._live_children_cpu: dict[int, float] = {}
        self._services = _service_processes()
        self._service_cpu0: dict[str, float] = {}
        self._t0 = 0.0
        self._times0: os.times_result | None = None
        self.usage: Usage | None = None

    def __enter__(self) -> ResourceMeter:
        self._service_cpu0 = {key: _cpu(proc) for key, proc in self._services.items()}
        self._times0 = os.times()
        self._t0 = time.perf_counter()
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self.sample()

    def sample(self) -> None:
        """Record the tree's RSS now (also called by the sampler thread)."""
        total = 0
        try:
            procs = [self._me, *self._me.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            try:
                total += proc.memory_info().rss
                if proc.pid != self._me.pid:
                    self._live_children_cpu[proc.pid] = _cpu(proc)
            except psutil.Error:
                continue
        self._peak_rss = max(self._peak_rss, total)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        wall = time.perf_counter() - self._t0
        self.sample()
        self._stop.set()
        self._sampler.join(timeout=5)
        assert self._times0 is not None
        t0, t1 = self._times0, os.times()
        own = (t1.user - t0.user) + (t1.system - t0.system)
        reaped = (t1.children_user - t0.children_user) + (t1.children_system - t0.children_system)
        alive = {c.pid for c in self._me.children(recursive=True)}
        unreaped = sum(cpu for pid, cpu in self._live_children_cpu.items() if pid in alive)
        services = {
            key: round(_cpu(proc) - self._service_cpu0.get(key, 0.0), 3)
            for key, proc in self._services.items()
        }
        self.usage = Usage(
            wall_s=round(wall, 3),
            cpu_s=round(own + reaped + unreaped, 3),
            peak_rss_mb=round(self._peak_rss / 2**20, 1),
            service_cpu_s=services,
        )
