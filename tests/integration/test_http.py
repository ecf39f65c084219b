"""The HTTP endpoints (DESIGN §8) on an embedded server: what is exposed, and where."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pymysql
import pytest

from delivery_server.settings import Settings, load_settings
from tests.integration.harness import RunningServer, http_get, prepared_store

pytestmark = pytest.mark.timeout(60)


def embedded(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'd.db'}",
        "outbox_dir": tmp_path / "outbox",
        "http_port": 0,
        "log_level": "warning",
    }
    return load_settings(**{**values, **overrides})


async def test_health_readiness_and_metrics_are_served_and_nothing_else(tmp_path: Path) -> None:
    settings = embedded(tmp_path)
    async with prepared_store(settings), RunningServer(settings) as server:
        assert (await http_get(server.http_port, "/healthz"))[0] == 200
        assert (await http_get(server.http_port, "/readyz"))[0] == 200
        status, text = await http_get(server.http_port, "/metrics")
        assert status == 200
        for name in (
            "delivery_emails_sent_total",
            "delivery_emails_failed_total",
            "delivery_send_duration_seconds_bucket",
            "delivery_queue_backlog",
            "delivery_inflight",
            'delivery_jobs{status="processing"}',
            'delivery_emails{status="unknown"}',
            "delivery_sending_paused",
        ):
            assert name in text, name
        for path in ("/", "/admin", "/metrics/../etc/passwd", "/debug"):
            assert (await http_get(server.http_port, path))[0] == 404, path


async def test_the_http_server_binds_to_the_configured_host_only(tmp_path: Path) -> None:
    settings = embedded(tmp_path, http_host="127.0.0.1")
    async with prepared_store(settings), RunningServer(settings) as server:
        assert (await http_get(server.http_port, "/healthz"))[0] == 200
        # Linux routes all of 127.0.0.0/8 to loopback: a socket bound to 127.0.0.1 only
        # must refuse a connection to another loopback address.
        with socket.socket() as sock:
            sock.settimeout(2)
            with pytest.raises(ConnectionRefusedError):
                sock.connect(("127.0.0.2", server.http_port))


async def test_readiness_fails_when_the_database_is_gone(mariadb_url: str, tmp_path: Path) -> None:
    settings = embedded(tmp_path, database_url=mariadb_url)
    async with prepared_store(settings), RunningServer(settings) as server:
        assert (await http_get(server.http_port, "/readyz"))[0] == 200
        database = mariadb_url.rsplit("/", 1)[1]

        def drop() -> None:
            conn = pymysql.connect(host="127.0.0.1", user="root", password="")
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE `{database}`")
            conn.close()

        # Off the event loop: the server runs on it, and a transaction of its own caught
        # half-way would hold the metadata lock DROP DATABASE waits for, for ever.
        await asyncio.to_thread(drop)
        status, body = await http_get(server.http_port, "/readyz")
        assert status == 503
        assert "store" in body
        assert (await http_get(server.http_port, "/healthz"))[0] == 200  # alive, not ready
