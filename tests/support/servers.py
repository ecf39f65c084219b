"""Real server processes (``python -m delivery_server run``) for end-to-end and fault tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tests.conftest import free_port


class ServerProcess:
    """``python -m delivery_server run [args]`` with settings from the environment
    (``args``: e.g. ``["--role", "publisher"]``); stdout and stderr go to ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path, args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "delivery_server", "run", *args],
            env={**os.environ, **env, "DELIVERY_HTTP_PORT": str(self.port)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def healthy(self) -> bool:
        assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                return True
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def metrics(self) -> str:
        """The Prometheus text of ``/metrics``."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text: str = response.read().decode()
        return text

    def kill(self) -> None:
        """SIGKILL: a crashed task, with no chance to clean up."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        if not self._log.closed:
            self._log.close()

    def terminate(self) -> None:
        """SIGTERM without waiting (``stop`` waits)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        if not self._log.closed:
            self._log.close()
        return code


def server_env(
    database_url: str, aws_endpoint: str, queue_url: str, **extra: str
) -> dict[str, str]:
    """Environment for a server on MariaDB + SQS + SES at ``aws_endpoint``, tuned for tests."""
    env = {
        "DELIVERY_DATABASE_URL": database_url,
        "DELIVERY_QUEUE": "sqs",
        "DELIVERY_SQS_QUEUE_URL": queue_url,
        "DELIVERY_AWS_ENDPOINT_URL": aws_endpoint,
        "DELIVERY_SENDER": "ses",
        "DELIVERY_POLL_INTERVAL": "0.1",
        "DELIVERY_RETRY_BASE_DELAY": "0.2",
        "DELIVERY_LOG_FORMAT": "json",
        "DELIVERY_CONCURRENCY": "8",
        # Short long polls: a stopping server lets its receive finish.
        "DELIVERY_RECEIVE_WAIT": "1",
    }
    env.update(extra)
    return env
