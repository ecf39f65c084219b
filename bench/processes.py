"""Our server processes as the bench runs them: started in their own sessions, watched
from outside (CPU, peak RSS, optional py-spy), stopped gracefully, then killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.measure import SERVICE_NAMES
from bench.stand_in import REPO

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
SAMPLE_INTERVAL = 0.1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def service_processes() -> dict[str, psutil.Process]:
    """MariaDB (and Redis) processes, to report their CPU separately."""
    found = {}
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in SERVICE_NAMES:
            found[f"{proc.info['name']}:{proc.pid}"] = proc
    return found


@dataclass
class ServerProcesses:
    """``delivery-server run`` processes, each in its own session (so nothing outlives
    the bench), each logging to its own file."""

    env: dict[str, str]
    log_dir: Path
    count: int
    # With it, one more process: ``run --role tracker`` with these settings (the tracker
    # in a task of its own, as a deployment may run it), after the ``count`` servers.
    tracker_env: dict[str, str] | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        runs = [(self.env, ["run"])] * self.count
        if self.tracker_env is not None:
            runs.append((self.tracker_env, ["run", "--role", "tracker"]))
        for index, (settings, arguments) in enumerate(runs):
            port = free_port()
            log = (self.log_dir / f"server-{index}.log").open("wb")
            env = {**settings, "DELIVERY_HTTP_PORT": str(port)}
            command = [sys.executable, "-m", "delivery_server", *arguments]
            proc = subprocess.Popen(
                command,
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            self.procs.append(proc)
            self.ports.append(port)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for index, port in enumerate(self.ports):
            while True:
                self.check_alive()
                try:
                    url = f"http://127.0.0.1:{port}/readyz"
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"server {index} not ready within {timeout}s: {self.tail(index)}"
                    )
                time.sleep(0.1)

    def check_alive(self) -> None:
        for index, proc in enumerate(self.procs):
            if proc.poll() is not None:
                raise RuntimeError(f"server {index} exited ({proc.returncode}): {self.tail(index)}")

    def tail(self, index: int, chars: int = 2000) -> str:
        path = self.log_dir / f"server-{index}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def counter_totals(self, name: str, label: str) -> dict[str, float]:
        """A counter's samples summed over every server, by one label's value (from each
        server's ``/metrics``)."""
        totals: dict[str, float] = {}
        for port in self.ports:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            for family in text_string_to_metric_families(text):
                if family.name != name:
                    continue
                for sample in family.samples:
                    if sample.name == f"{name}_total":
                        key = sample.labels.get(label, "")
                        totals[key] = totals.get(key, 0.0) + sample.value
        return totals

    def psutil_procs(self) -> list[psutil.Process]:
        return [psutil.Process(p.pid) for p in self.procs]

    def stop(self) -> None:
        """SIGTERM (the server's own graceful stop), then SIGKILL the whole session."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


class RssSampler:
    """Peak (and last) resident set of each process, sampled by a thread at 10 Hz."""

    def __init__(self, procs: list[psutil.Process]) -> None:
        self._procs = procs
        self.peak = [0] * len(procs)
        self.last = [0] * len(procs)
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(SAMPLE_INTERVAL):
                return

    def sample(self) -> None:
        total = 0
        for index, proc in enumerate(self._procs):
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            self.last[index] = rss
            self.peak[index] = max(self.peak[index], rss)
            total += rss
        self.peak_total = max(self.peak_total, total)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()


@contextlib.contextmanager
def py_spy(pid: int, output: Path) -> Iterator[None]:
    """``py-spy record`` (collapsed stacks, GIL-holding samples only) while in the block.

    The profiler samples from outside the process; its own CPU is not counted as ours."""
    command = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid)]
    command += ["--format", "raw", "--output", str(output), "--rate", "200", "--gil"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the job starts
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def running_servers(servers: ServerProcesses) -> Iterator[ServerProcesses]:
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()
