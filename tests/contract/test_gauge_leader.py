"""One process of a fleet counts the database gauges (issue 14): the live one with the
lowest instance id; the others export none of them, and the next lowest takes over once
the leader's row is gone. Two stores on one database stand for two tasks."""

from __future__ import annotations

from typing import cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from delivery_server.adapters.store_sql import SqlStore
from delivery_server.app.roles import _refresh_metrics_once
from delivery_server.fleet import FleetRate, GaugeLeader
from delivery_server.heartbeats import Heartbeats
from delivery_server.metrics import Metrics
from delivery_server.ports import Queue
from delivery_server.sendgate import SendGate

pytestmark = pytest.mark.timeout(60)

DATABASE_GAUGES = {"delivery_jobs", "delivery_emails", "delivery_emails_delivery"}


class _Backlog:
    async def backlog(self) -> int:
        return 7


QUEUE = cast(Queue, _Backlog())


def exported(metrics: Metrics) -> set[str]:
    """The names of the metrics with at least one sample."""
    families = text_string_to_metric_families(metrics.render().decode())
    return {family.name for family in families if family.samples}


class Task:
    """One sending process: its fleet membership, gauge leader and metrics."""

    def __init__(self, store: SqlStore, instance_id: str) -> None:
        self.store = store
        self.fleet = FleetRate(
            store, SendGate(), Heartbeats(), total_rate=10, instance_id=instance_id
        )
        self.leader = GaugeLeader(store)
        self.leader.fleet = self.fleet
        self.metrics = Metrics()

    async def refresh(self) -> set[str]:
        await _refresh_metrics_once(self.store, QUEUE, self.metrics, self.leader)
        return exported(self.metrics)


async def test_only_the_lowest_live_instance_counts_and_the_next_takes_over(
    store: SqlStore, other_store: SqlStore
) -> None:
    first, second = Task(store, "task-a"), Task(other_store, "task-b")
    await second.fleet.beat_once()
    await first.fleet.beat_once()
    await second.fleet.beat_once()

    assert await first.refresh() >= DATABASE_GAUGES
    on_second = await second.refresh()
    assert not DATABASE_GAUGES & on_second
    assert "delivery_queue_backlog" in on_second  # the queue's own count, on every task

    # The leader's row is gone (it expired, or the task left): the next lowest learns it
    # at its next beat and counts at its next refresh.
    await store.remove_instance("task-a")
    await second.fleet.beat_once()
    assert await second.refresh() >= DATABASE_GAUGES


async def test_a_process_outside_the_fleet_counts_only_when_no_fleet_is_live(
    store: SqlStore, other_store: SqlStore
) -> None:
    alone = Metrics()
    outside = GaugeLeader(store)  # a publisher-only task, or one with no rate to share
    await _refresh_metrics_once(store, QUEUE, alone, outside)
    assert exported(alone) >= DATABASE_GAUGES

    member = Task(other_store, "task-z")
    await member.fleet.beat_once()
    await _refresh_metrics_once(store, QUEUE, alone, outside)
    assert not DATABASE_GAUGES & exported(alone)
    assert await member.refresh() >= DATABASE_GAUGES


async def test_a_member_whose_beat_failed_asks_the_table(
    store: SqlStore, other_store: SqlStore
) -> None:
    first, second = Task(store, "task-a"), Task(other_store, "task-b")
    await first.fleet.beat_once()
    await second.fleet.beat_once()
    second.fleet.lowest = None  # what a failed beat leaves
    assert not DATABASE_GAUGES & await second.refresh()
    await store.remove_instance("task-a")
    assert await second.refresh() >= DATABASE_GAUGES
