"""The publisher's paging: a small first page (its commit is what the first sends wait
for), then full pages until the job has nothing pending."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pytest

from delivery_server.heartbeats import Heartbeats
from delivery_server.metrics import Metrics
from delivery_server.models import Job, JobStatus, QueueMessage
from delivery_server.ports import PublishFn
from delivery_server.publisher import FIRST_PAGE, Publisher

pytestmark = pytest.mark.timeout(10)


class PagingStore:
    """A job of ``pending`` emails; records the page size of every publish call."""

    def __init__(self, pending: int) -> None:
        self.pending = pending
        self.pages: list[int] = []

    async def due_jobs(self, now: datetime) -> list[Job]:
        return [Job(1, "j", JobStatus.PROCESSING, "t", "bank@example.com")]

    async def publish_pending(self, job_id: int, limit: int, publish: PublishFn) -> int:
        self.pages.append(limit)
        count = min(limit, self.pending)
        self.pending -= count
        await publish([QueueMessage(email_id=i, job_id=job_id) for i in range(count)])
        return count

    async def settle_jobs(self, now: datetime) -> list[Job]:
        return []


class NullQueue:
    async def publish(self, messages: Sequence[QueueMessage]) -> set[int]:
        return set()


async def test_the_first_page_of_a_poll_is_small_then_pages_are_full() -> None:
    store = PagingStore(pending=FIRST_PAGE + 1000 + 10)
    publisher = Publisher(
        store,  # type: ignore[arg-type]
        NullQueue(),  # type: ignore[arg-type]
        Metrics(),
        Heartbeats(),
        poll_interval=1.0,
        page_size=500,
    )

    assert await publisher.poll_once() == FIRST_PAGE + 1010

    assert store.pages == [FIRST_PAGE, 500, 500, 500]
