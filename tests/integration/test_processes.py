"""Server processes, as ECS runs them: several at once, and stopped with SIGTERM."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from delivery_server.models import EmailStatus, JobStatus
from tests.conftest import wait_for
from tests.integration.harness import (
    aws_settings,
    create_job,
    create_sqs_queue,
    customer,
    moto_sent,
    prepared_store,
    verify_sender,
    wait_for_job,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.servers import ServerProcess, server_env

pytestmark = pytest.mark.timeout(180)


async def test_two_server_processes_on_one_job_send_nothing_twice(
    mariadb_url: str, proxy: FaultProxy, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    verify_sender(proxy.upstream)
    queue_url = create_sqs_queue(proxy.upstream)
    settings = aws_settings(mariadb_url, proxy.endpoint, queue_url, tmp_path)
    env = server_env(mariadb_url, proxy.endpoint, queue_url)
    async with prepared_store(settings) as store:
        for i in range(2):
            servers.append(ServerProcess(env, tmp_path / f"server-{i}.log"))
        for server in servers:
            wait_for(server.healthy, timeout=60, what="server health")
        job = await create_job(store, [customer(n) for n in range(120)])
        done = await wait_for_job(store, job.id, timeout=150)
        assert (done.status, done.sent_count) == (JobStatus.COMPLETED, 120)
    for server in servers:
        assert server.stop() == 0
    sent = Counter(mail.to[0] for mail in moto_sent(proxy.upstream))
    assert len(sent) == 120
    assert max(sent.values()) == 1
    assert max(proxy.sends.values()) == 1


async def test_sigterm_mid_job_loses_nothing(
    mariadb_url: str, proxy: FaultProxy, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    verify_sender(proxy.upstream)
    queue_url = create_sqs_queue(proxy.upstream)
    settings = aws_settings(mariadb_url, proxy.endpoint, queue_url, tmp_path)
    env = server_env(
        mariadb_url,
        proxy.endpoint,
        queue_url,
        DELIVERY_SHUTDOWN_GRACE="10",
        DELIVERY_CONCURRENCY="4",
    )
    proxy.send_delay = 0.3  # a slow provider, so that the job is mid-way at SIGTERM
    async with prepared_store(settings) as store:
        job = await create_job(store, [customer(n) for n in range(80)])
        first = ServerProcess(env, tmp_path / "first.log")
        servers.append(first)
        wait_for(lambda: sum(proxy.sends.values()) >= 10, timeout=60, what="first sends")
        assert first.stop() == 0
        summary = await store.job_summary(job.id)
        assert summary.counts.get(EmailStatus.SENDING, 0) == 0
        assert summary.counts.get(EmailStatus.UNKNOWN, 0) == 0
        assert summary.counts.get(EmailStatus.SENT, 0) < 80

        servers.append(ServerProcess(env, tmp_path / "second.log"))
        done = await wait_for_job(store, job.id, timeout=150)
        assert (done.status, done.sent_count) == (JobStatus.COMPLETED, 80)
    sent = Counter(mail.to[0] for mail in moto_sent(proxy.upstream))
    assert len(sent) == 80
    assert max(sent.values()) == 1
