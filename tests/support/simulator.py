"""Fixtures running the AWS stand-in (``stand_in``) in the test's loop.

Use from a test module (or a conftest) with ``from tests.support.simulator import
simulator, sim_queue  # noqa: F401``; the queue contract suite needs only ``"sim_queue"``
added to its fixture list. ``accepted_emails`` reads what a stand-in accepted, in
whatever process it runs.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

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


def accepted_emails(endpoint_url: str) -> list[dict[str, Any]]:
    """Every email the stand-in at ``endpoint_url`` (a process, say) accepted since its
    start, as ``/_sim/sent`` lists them (``message_id``, ``to``, ``tags``, ...). None may
    have been dropped from its log: start it with a ``--keep-sent`` above the emails a
    test sends."""
    url = f"{endpoint_url}/_sim/sent?list=1&limit=1000000000"
    with urllib.request.urlopen(url, timeout=10) as response:
        log = json.loads(response.read())
    emails: list[dict[str, Any]] = log["emails"]
    assert len(emails) == log["count"], f"the stand-in kept {len(emails)} of {log['count']}"
    return emails


def accepted_recipients(endpoint_url: str) -> Counter[str]:
    """Copies per recipient that the stand-in at ``endpoint_url`` accepted."""
    return Counter(rcpt for sent in accepted_emails(endpoint_url) for rcpt in sent["to"])
