"""The tracker's ingestion alone: N synthetic SES events through ``Tracker`` into MariaDB.

``python -m bench.ingest --emails 10000 --repeat 3`` (add ``--queue local`` to leave SQS
out). One job of sent emails is written straight into a fresh database; each email gets
the events the bench's stand-in publishes for it (``Send``, then ``Delivery``, or
``Bounce`` for ``--bounce-rate`` of them), as SNS envelopes built the stand-in's way.
Each repeat puts them all on the events queue, runs a ``Tracker`` (the server's
fetchers, store and recorder) until every event is recorded, and reports:

* events/s, from the tracker's start to the last event recorded;
* CPU-ms per event of this process (the tracker, the store, the SQS client), of
  ``mariadbd`` and of the stand-in (the SQS side: AWS's work in production);
* SQL statements per event, counted at the engine: the one figure here that the other
  users of a shared machine cannot blur.

With ``--queue sqs`` (the default) the events queue is the stand-in's SQS (a child
process), reached through ``adapters.aws.sqs`` as the server reaches it; with ``local``
it is the in-process queue of embedded mode. Between repeats the events and delivery
statuses are cleared, so every repeat records the same events from scratch. MariaDB's
CPU includes whatever else uses it meanwhile: compare medians of a few repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event as sa_event

from bench.ingest_events import (
    DATABASE,
    create_job,
    event_bodies,
    paced,
    publisher_process,
    reset_tracking,
)
from bench.ours import base_env, create_queue, drop_database, mysql_url, recreate_database
from bench.processes import process_cpu, service_processes
from bench.stand_in import SimulatorProcess
from delivery_server.adapters.aws.sqs import open_sqs_queue
from delivery_server.adapters.queue_local import LocalQueue
from delivery_server.adapters.store_sql import SqlStore, upgrade_schema
from delivery_server.brake import BrakeThresholds
from delivery_server.heartbeats import Heartbeats
from delivery_server.metrics import Metrics
from delivery_server.models import Delivery, EventOutcome, TrackingEvent
from delivery_server.ports import Queue
from delivery_server.tracker import EventRecorder, Tracker

QUEUE_NAME = "bench-ingest-events"
RECEIVE_WAIT = 2.0  # seconds: short, so the fetchers' last long polls end soon after


@dataclass(frozen=True, slots=True)
class Result:
    events: int
    seconds: float
    ours_cpu_s: float
    mariadb_cpu_s: float
    stand_in_cpu_s: float
    statements: int
    record_calls: int
    receives: int
    delete_requests: int

    def per_event_ms(self, cpu_s: float) -> float:
        return 1000 * cpu_s / self.events


class CountingRecorder(EventRecorder):
    """The server's recorder, telling when ``expected`` events have been settled."""

    def __init__(self, *args: Any, expected: int) -> None:
        super().__init__(*args)
        self.expected = expected
        self.settled = 0
        self.calls = 0
        self.done = asyncio.Event()

    async def record(self, events: Sequence[TrackingEvent]) -> list[EventOutcome]:
        outcomes = await super().record(events)
        self.calls += 1
        self.settled += sum(outcome is not EventOutcome.EARLY for outcome in outcomes)
        if self.settled >= self.expected:
            self.done.set()
        return outcomes


class CountingQueue:
    """A queue counting the calls the tracker makes of it (receives, delete requests)."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        self.receives = 0
        self.deletes = 0

    async def receive(
        self, max_messages: int, wait_seconds: float, visibility_timeout: int
    ) -> list[Delivery]:
        self.receives += 1
        return await self._queue.receive(max_messages, wait_seconds, visibility_timeout)

    async def delete(self, receipts: Sequence[str]) -> None:
        self.deletes += -(-len(receipts) // 10)  # requests of ten, as SQS takes them
        await self._queue.delete(receipts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


async def ingest(
    url: str,
    queue: Queue,
    expected: int,
    stand_in_cpu: Callable[[], float] | None,
    fetchers: int,
) -> Result:
    """Run a tracker on ``queue`` until ``expected`` events are recorded; what it cost."""
    store = await SqlStore.connect(url)
    statements = 0

    def count(*_args: Any) -> None:
        nonlocal statements
        statements += 1

    sa_event.listen(store._db.engine.sync_engine, "before_cursor_execute", count)
    metrics = Metrics()
    brake = BrakeThresholds(bounce_rate=0.05, complaint_rate=0.001, min_sends=200)
    recorder = CountingRecorder(store, metrics, brake, expected=expected)
    counted = CountingQueue(queue)
    tracker = Tracker(
        counted, recorder, Heartbeats(), metrics, fetchers=fetchers, wait_seconds=RECEIVE_WAIT
    )
    mariadb = list(service_processes().values())
    stop = asyncio.Event()
    try:
        cpu0, db0 = time.process_time(), sum(process_cpu(p) for p in mariadb)
        sim0 = stand_in_cpu() if stand_in_cpu else 0.0
        started = time.perf_counter()
        running = asyncio.create_task(tracker.run(stop))
        await recorder.done.wait()
        seconds = time.perf_counter() - started
        cpu1, db1 = time.process_time(), sum(process_cpu(p) for p in mariadb)
        sim1 = stand_in_cpu() if stand_in_cpu else 0.0
        stop.set()
        await running
    finally:
        await store.close()
    return Result(
        expected,
        seconds,
        cpu1 - cpu0,
        db1 - db0,
        sim1 - sim0,
        statements,
        recorder.calls,
        counted.receives,
        counted.deletes,
    )


def report(results: list[Result], queue: str, command: str) -> None:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    rows = [
        ("events/s", [r.events / r.seconds for r in results], 0),
        ("ours CPU-ms/event", [r.per_event_ms(r.ours_cpu_s) for r in results], 3),
        ("mariadbd CPU-ms/event", [r.per_event_ms(r.mariadb_cpu_s) for r in results], 3),
        ("SQL statements/event", [r.statements / r.events for r in results], 3),
        ("events/record call", [r.events / r.record_calls for r in results], 1),
        ("events/receive", [r.events / r.receives for r in results], 1),
        ("events/delete request", [r.events / r.delete_requests for r in results], 1),
    ]
    if queue == "sqs":
        stand_in = [r.per_event_ms(r.stand_in_cpu_s) for r in results]
        rows.append(("stand-in CPU-ms/event", stand_in, 3))
    print(f"{results[0].events} events, queue {queue}, {len(results)} repeats (median; each)")
    for name, values, digits in rows:
        each = " ".join(f"{v:.{digits}f}" for v in values)
        print(f"  {name:24} {median(values):10.{digits}f}   ({each})")
    print(f"reproduce: {command}")


async def run_all(args: argparse.Namespace) -> list[Result]:
    params = _params(args)
    recreate_database(params, DATABASE)
    url = mysql_url(params, DATABASE)
    try:
        await upgrade_schema(url)
        job_id, email_ids = create_job(params, args.emails)
        bodies = event_bodies(job_id, email_ids, args.bounce_rate, args.seed)
        if args.queue == "local":
            return [await _repeat_local(args, url, bodies) for _ in range(args.repeat)]
        os.environ.update({k: v for k, v in base_env().items() if k.startswith("AWS_")})
        with SimulatorProcess(ses_latency=0.0) as sim:
            queue_url = create_queue(sim, QUEUE_NAME)
            return [
                await _repeat_sqs(args, url, bodies, sim, queue_url) for _ in range(args.repeat)
            ]
    finally:
        drop_database(params, DATABASE)


async def _repeat_sqs(
    args: argparse.Namespace, url: str, bodies: list[str], sim: SimulatorProcess, queue_url: str
) -> Result:
    reset_tracking(_params(args))
    publisher = multiprocessing.get_context("spawn").Process(
        target=publisher_process, args=(sim.endpoint_url, queue_url, bodies, args.rate)
    )
    publisher.start()
    try:
        if not args.rate:  # all on the queue before the tracker starts
            await asyncio.to_thread(publisher.join)
        async with open_sqs_queue(queue_url, endpoint_url=sim.endpoint_url) as sqs:
            return await ingest(url, sqs, len(bodies), sim.cpu_seconds, args.fetchers)
    finally:
        await asyncio.to_thread(publisher.join)
        if publisher.exitcode != 0:
            raise RuntimeError(f"the publisher exited {publisher.exitcode}")


async def _repeat_local(args: argparse.Namespace, url: str, bodies: list[str]) -> Result:
    reset_tracking(_params(args))
    local = LocalQueue()
    publishing = asyncio.create_task(paced(bodies, args.rate, local.publish_bodies))
    if not args.rate:
        await publishing
    result = await ingest(url, local, len(bodies), None, args.fetchers)
    await publishing
    return result


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {"host": args.db_host, "port": args.db_port, "user": "root"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--emails", type=int, default=10_000, help="two events each")
    parser.add_argument("--bounce-rate", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--queue", choices=("sqs", "local"), default="sqs")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="events/s put on the queue while the tracker runs (0: all before it starts)",
    )
    parser.add_argument("--fetchers", type=int, default=4, help="the tracker's (its default)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db-host", default="127.0.0.1")
    parser.add_argument("--db-port", type=int, default=3306)
    args = parser.parse_args(argv)
    if min(args.emails, args.repeat, args.fetchers) < 1 or args.rate < 0:
        parser.error("--emails, --repeat and --fetchers must be at least 1, --rate not negative")
    results = asyncio.run(run_all(args))
    report(results, args.queue, " ".join(["python -m bench.ingest", *sys.argv[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
