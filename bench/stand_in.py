"""Run the AWS stand-in (``stand_in``) as a child process for a benchmark.

A separate process, not the benchmark's own loop: the stand-in must not share a core's
time (or its CPU accounting) with what is being measured.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from stand_in.sqs_api import ACCOUNT_ID

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0


class SimulatorProcess:
    """``with SimulatorProcess(ses_latency=0.02) as sim: sim.endpoint_url``.

    With ``events_queue``, the stand-in publishes the SES events of every email it
    accepts to that queue of its SQS (``events_queue_url``), ``bounce_rate`` of them
    bounce (the bench's tracking runs use 1 %) and ``open_rate`` of the delivered ones are
    opened too (a third event per email).
    """

    def __init__(
        self,
        ses_latency: float = 0.02,
        extra_args: tuple[str, ...] = (),
        events_queue: str | None = None,
        bounce_rate: float = 0.0,
        open_rate: float = 0.0,
    ) -> None:
        self.ses_latency = ses_latency
        self.extra_args = extra_args
        self.events_queue = events_queue
        self.bounce_rate = bounce_rate
        self.open_rate = open_rate
        self.endpoint_url = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> SimulatorProcess:
        env = dict(os.environ)
        # The repository may not be pip-installed: let the child import it from here.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "stand_in", "--host", "127.0.0.1"]
        command += ["--port", "0", "--ses-latency", str(self.ses_latency), *self.extra_args]
        if self.events_queue is not None:
            command += ["--events-queue", self.events_queue]
            command += ["--bounce-rate", str(self.bounce_rate)]
            command += ["--open-rate", str(self.open_rate)]
        self._proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        self.endpoint_url = self._read_endpoint()
        return self

    def _read_endpoint(self) -> str:
        assert self._proc is not None
        assert self._proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout=START_TIMEOUT):
                self.close()
                raise RuntimeError(f"simulator did not start within {START_TIMEOUT}s")
        line = self._proc.stdout.readline()
        if not line.startswith("simulator listening on "):
            self.close()
            raise RuntimeError(f"simulator did not start: {line!r}")
        return line.split()[-1]

    def control(self, path: str, payload: Any = None) -> Any:
        """Call the simulator's control API (``/_sim/...``)."""
        data = None if payload is None else json.dumps(payload).encode()
        url = f"{self.endpoint_url}{path}"
        method = "GET" if data is None else "POST"
        # The URL is the stand-in's own http:// endpoint, never user input.
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())

    @property
    def events_queue_url(self) -> str | None:
        """The SQS queue URL of the SES events (``None`` without ``events_queue``)."""
        if self.events_queue is None:
            return None
        return f"{self.endpoint_url}/{ACCOUNT_ID}/{self.events_queue}"

    def sent_count(self) -> int:
        return int(self.control("/_sim/sent")["count"])

    def cpu_seconds(self) -> float:
        """CPU time the simulator process has used so far."""
        assert self._proc is not None
        times = psutil.Process(self._proc.pid).cpu_times()
        return float(times.user + times.system)

    def close(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
