"""Fixtures running the AWS stand-in (``stand_in``) in the test's loop.

Use from a test module (or a conftest) with ``from tests.support.simulator import
simulator, sim_queue  # noqa: F401``; the queue contract suite needs only ``"sim_queue"``
added to its fixture list.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiobotocore.session import get_session

from delivery_server.adapters.aws.sqs import SqsQueue, open_sqs_queue
from stand_in import Simulator, start_simulator
from tests.conftest import AWS_REGION


@pytest.fixture
async def simulator(aws_env: None) -> AsyncIterator[Simulator]:
    """A fresh simulator on a free loopback port, without SES latency."""
    sim = await start_simulator(port=0, ses_latency=0.0)
    try:
        yield sim
    finally:
        await sim.close()


@pytest.fixture
async def events_simulator(aws_env: None) -> AsyncIterator[Simulator]:
    """A fresh simulator that publishes SES events (SNS envelopes) to the SQS queue
    ``ses-events`` (``sim.events_queue_url``), without SES latency."""
    sim = await start_simulator(port=0, ses_latency=0.0, events_queue="ses-events")
    try:
        yield sim
    finally:
        await sim.close()


@pytest.fixture
async def sim_queue(simulator: Simulator) -> AsyncIterator[SqsQueue]:
    """The SQS adapter on an empty queue of the simulator."""
    session = get_session()
    endpoint = simulator.endpoint_url
    async with session.create_client("sqs", endpoint_url=endpoint, region_name=AWS_REGION) as sqs:
        url = (await sqs.create_queue(QueueName="delivery-contract"))["QueueUrl"]
    async with open_sqs_queue(url, endpoint_url=endpoint, region_name=AWS_REGION) as queue:
        yield queue
