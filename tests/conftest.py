"""Shared fixtures: a private MariaDB database and a real moto server process.

Both services are required. When one is missing the tests fail (never skip): CI starts
MariaDB in .ci/run, and moto comes from the dev dependencies.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
import structlog

# Fixtures running the AWS stand-in simulator (`simulator`, `sim_queue`).
pytest_plugins = ["tests.support.simulator"]

MARIADB_HOST = os.environ.get("TEST_MARIADB_HOST", "127.0.0.1")
MARIADB_PORT = int(os.environ.get("TEST_MARIADB_PORT", "3306"))
AWS_REGION = "us-east-1"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: object, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` (a callable) until it is true; fail the test after ``timeout``."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Commands run in-process configure structlog with the stream of that moment (which
    pytest closes after the test); give every test the default configuration back."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def mariadb_server() -> str:
    """Check MariaDB answers; fail loudly if not."""
    try:
        conn = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root", password="")
    except pymysql.MySQLError as exc:
        pytest.fail(f"MariaDB is not reachable on {MARIADB_HOST}:{MARIADB_PORT}: {exc}")
    conn.close()
    return f"{MARIADB_HOST}:{MARIADB_PORT}"


@pytest.fixture
def mariadb_url(mariadb_server: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"delivery_test_{secrets.token_hex(4)}"
    conn = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root", password="")
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield f"mysql://root@{mariadb_server}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'delivery.db'}"


@pytest.fixture(scope="session")
def aws_env() -> Iterator[None]:
    """Fake AWS credentials so that no test can ever reach a real account."""
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=AWS_REGION,
        AWS_REGION=AWS_REGION,
    )
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def moto_server(aws_env: None) -> Iterator[str]:
    """A real moto server process on a free loopback port; yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return True
        except OSError:
            return False

    try:
        wait_for(up, timeout=60, what="moto server")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def moto(moto_server: str) -> str:
    """The moto endpoint, with all of its state reset for this test."""
    req = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    with urllib.request.urlopen(req, timeout=10):
        pass
    return moto_server
