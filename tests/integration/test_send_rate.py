"""Several server processes share one send rate (issue: reliability, item 3)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiobotocore.session import get_session

from delivery_server.models import JobStatus
from stand_in import Simulator
from tests.conftest import AWS_REGION
from tests.integration.harness import (
    aws_settings,
    create_job,
    customer,
    prepared_store,
    wait_for_job,
    wait_until,
)
from tests.support.servers import ServerProcess, server_env

pytestmark = pytest.mark.timeout(120)

RATE = 10.0


async def test_two_processes_together_stay_under_the_account_rate(
    mariadb_url: str,
    simulator: Simulator,
    tmp_path: Path,
    servers: list[ServerProcess],
) -> None:
    endpoint = simulator.endpoint_url
    async with get_session().create_client(
        "sqs", endpoint_url=endpoint, region_name=AWS_REGION
    ) as sqs:
        queue_url = (await sqs.create_queue(QueueName="rate"))["QueueUrl"]
    settings = aws_settings(mariadb_url, endpoint, queue_url, tmp_path)
    env = server_env(mariadb_url, endpoint, queue_url, DELIVERY_MAX_SEND_RATE=str(RATE))
    async with prepared_store(settings) as store:
        for i in range(2):
            servers.append(ServerProcess(env, tmp_path / f"server-{i}.log"))
        for server in servers:
            await wait_until(server.healthy, timeout=60, what="server health")
        job = await create_job(store, [customer(n) for n in range(60)])
        done = await wait_for_job(store, job.id, timeout=90)
        assert (done.status, done.sent_count) == (JobStatus.COMPLETED, 60)
    # Stopped here, off the event loop: the simulator runs on this loop and must keep
    # answering while the servers shut down.
    codes = await asyncio.gather(*(asyncio.to_thread(server.stop) for server in servers))
    assert codes == [0, 0]

    times = sorted(record.accepted_at for record in simulator.sent.records)
    assert len(times) == 60
    # In every one-second window: at most the rate, plus one token per process.
    busiest = max(sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times))
    assert busiest <= RATE + 2, f"{busiest} sends in one second"
