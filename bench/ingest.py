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
import json
import multiprocessing
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiobotocore.session import get_session
from sqlalchemy import event as sa_event

from bench.ours import base_env, create_queue, drop_database, mysql_url, recreate_database
from bench.processes import process_cpu, service_processes
from bench.stand_in import SimulatorProcess
from bench.workload import connect
from delivery_server.adapters.aws.sqs import open_sqs_queue
from delivery_server.adapters.queue_local import LocalQueue
from delivery_server.adapters.ses_event_payloads import (
    AcceptedMail,
    outcome_events,
    sns_notification,
)
from delivery_server.adapters.store_sql import SqlStore, upgrade_schema
from delivery_server.brake import BrakeThresholds
from delivery_server.heartbeats import Heartbeats
from delivery_server.metrics import Metrics
from delivery_server.models import Delivery, EventOutcome, TrackingEvent, utcnow
from delivery_server.ports import Queue
from delivery_server.tracker import EventRecorder, Tracker

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

DATABASE = "bench_ingest"
QUEUE_NAME = "bench-ingest-events"
TOPIC_ARN = "arn:aws:sns:us-east-1:000000000000:ses-events"
FROM_ADDRESS = "statements@bank.example"
INSERT_ROWS = 1000
PUBLISH_CONCURRENCY = 16
TICK = 0.02  # the stand-in's FLUSH_DELAY
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


def create_job(params: dict[str, Any], emails: int) -> tuple[int, list[int]]:
    """A processing job whose ``emails`` emails are all sent (message ids ``bench-<id>``)."""
    now = utcnow()
    with connect(params, database=DATABASE) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO delivery_job (name, status, template_name, from_address, created_at,"
            " started_at, total_count) VALUES ('ingest', 'processing', 'statement', %s, %s,"
            " %s, %s)",
            (FROM_ADDRESS, now, now, emails),
        )
        job_id = int(cur.lastrowid)
        for start in range(0, emails, INSERT_ROWS):
            rows = [
                (job_id, f"customer{n}@example.com", "{}", "sent", 1, now, now, now)
                for n in range(start, min(emails, start + INSERT_ROWS))
            ]
            cur.executemany(
                "INSERT INTO delivery_email (job_id, to_address, variables, status, attempts,"
                " created_at, updated_at, sent_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
        cur.execute("UPDATE delivery_email SET provider_message_id = CONCAT('bench-', id)")
        cur.execute("SELECT id FROM delivery_email ORDER BY id")
        return job_id, [int(row[0]) for row in cur.fetchall()]


def event_bodies(job_id: int, email_ids: list[int], bounce_rate: float, seed: int) -> list[str]:
    """Every email's events as the bench's stand-in publishes them (SNS envelopes)."""
    rng = random.Random(seed)
    sent_at = utcnow()
    reported_at = sent_at + timedelta(seconds=2)
    bodies = []
    for email_id in email_ids:
        mail = AcceptedMail(
            message_id=f"bench-{email_id}",
            source=FROM_ADDRESS,
            destination=(f"customer{email_id}@example.com",),
            sent_at=sent_at,
            tags={"job_id": str(job_id), "email_id": str(email_id)},
            configuration_set="bench",
        )
        bounce = rng.random() < bounce_rate
        for payload in outcome_events(mail, reported_at, bounce_all=bounce):
            message = json.dumps(payload, separators=(",", ":"))
            envelope = sns_notification(message, TOPIC_ARN, str(uuid.uuid4()), sent_at, "c2ln")
            bodies.append(json.dumps(envelope, separators=(",", ":")))
    return bodies


def reset_tracking(params: dict[str, Any]) -> None:
    """Forget what a repeat recorded: the next records the same events from scratch."""
    with connect(params, database=DATABASE) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM delivery_event")
        cur.execute("DELETE FROM delivery_suppression")
        cur.execute(
            "UPDATE delivery_email SET delivery_status = NULL, delivery_detail = NULL,"
            " delivery_updated_at = NULL, opened_at = NULL, clicked_at = NULL"
        )


async def publish_sqs(endpoint_url: str, queue_url: str, bodies: list[str], rate: float) -> None:
    """Put ``bodies`` on the stand-in's queue, ten to a SendMessageBatch; at ``rate``
    events a second when it is not 0 (a tick every ``TICK`` seconds, as the stand-in
    publishes)."""
    slots = asyncio.Semaphore(PUBLISH_CONCURRENCY)
    async with get_session().create_client(
        "sqs", endpoint_url=endpoint_url, region_name="us-east-1"
    ) as client:

        async def send(chunk: list[str]) -> None:
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {"Id": str(n), "MessageBody": body} for n, body in enumerate(chunk)
            ]
            async with slots:
                answer = await client.send_message_batch(QueueUrl=queue_url, Entries=entries)
            if answer.get("Failed"):
                raise RuntimeError(f"the stand-in refused {len(answer['Failed'])} events")

        async def publish(part: list[str]) -> None:
            chunks = [part[i : i + 10] for i in range(0, len(part), 10)]
            await asyncio.gather(*(send(chunk) for chunk in chunks))

        await paced(bodies, rate, publish)


async def paced(
    bodies: list[str], rate: float, publish: Callable[[list[str]], Awaitable[None]]
) -> None:
    """``publish`` all of ``bodies`` at once (``rate`` 0), or ``rate`` a second."""
    if not rate:
        await publish(bodies)
        return
    loop = asyncio.get_running_loop()
    started, sent = loop.time(), 0
    while sent < len(bodies):
        due = min(len(bodies), int((loop.time() - started) * rate) + 1)
        if due > sent:
            await publish(bodies[sent:due])
            sent = due
        await asyncio.sleep(TICK)


def publisher_process(endpoint_url: str, queue_url: str, bodies: list[str], rate: float) -> None:
    """``publish_sqs`` in a child process: its CPU is not counted as ours."""
    os.environ.update({k: v for k, v in base_env().items() if k.startswith("AWS_")})
    asyncio.run(publish_sqs(endpoint_url, queue_url, bodies, rate))


async def ingest(
    url: str, queue: Queue, expected: int, stand_in_cpu: Callable[[], float] | None
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
    tracker = Tracker(counted, recorder, Heartbeats(), metrics, wait_seconds=RECEIVE_WAIT)
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
    params: dict[str, Any] = {"host": args.db_host, "port": args.db_port, "user": "root"}
    recreate_database(params, DATABASE)
    url = mysql_url(params, DATABASE)
    try:
        await upgrade_schema(url)
        job_id, email_ids = create_job(params, args.emails)
        bodies = event_bodies(job_id, email_ids, args.bounce_rate, args.seed)
        if args.queue == "local":
            return [await _repeat_local(params, url, bodies, args.rate) for _ in range(args.repeat)]
        os.environ.update({k: v for k, v in base_env().items() if k.startswith("AWS_")})
        with SimulatorProcess(ses_latency=0.0) as sim:
            queue_url = create_queue(sim, QUEUE_NAME)
            return [
                await _repeat_sqs(params, url, bodies, args.rate, sim, queue_url)
                for _ in range(args.repeat)
            ]
    finally:
        drop_database(params, DATABASE)


async def _repeat_sqs(
    params: dict[str, Any],
    url: str,
    bodies: list[str],
    rate: float,
    sim: SimulatorProcess,
    queue_url: str,
) -> Result:
    reset_tracking(params)
    publisher = multiprocessing.get_context("spawn").Process(
        target=publisher_process, args=(sim.endpoint_url, queue_url, bodies, rate)
    )
    publisher.start()
    try:
        if not rate:  # all on the queue before the tracker starts
            await asyncio.to_thread(publisher.join)
        async with open_sqs_queue(queue_url, endpoint_url=sim.endpoint_url) as sqs:
            return await ingest(url, sqs, len(bodies), sim.cpu_seconds)
    finally:
        await asyncio.to_thread(publisher.join)
        if publisher.exitcode != 0:
            raise RuntimeError(f"the publisher exited {publisher.exitcode}")


async def _repeat_local(params: dict[str, Any], url: str, bodies: list[str], rate: float) -> Result:
    reset_tracking(params)
    local = LocalQueue()
    publishing = asyncio.create_task(paced(bodies, rate, local.publish_bodies))
    if not rate:
        await publishing
    result = await ingest(url, local, len(bodies), None)
    await publishing
    return result


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
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db-host", default="127.0.0.1")
    parser.add_argument("--db-port", type=int, default=3306)
    args = parser.parse_args(argv)
    if args.emails < 1 or args.repeat < 1 or args.rate < 0:
        parser.error("--emails and --repeat must be at least 1, --rate not negative")
    results = asyncio.run(run_all(args))
    report(results, args.queue, " ".join(["python -m bench.ingest", *sys.argv[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
