"""A model of the old job manager ("EED"), as DESIGN §1 describes it, on the bench's work.

Its design, kept: one manager thread polls the job table with a fixed delay; for every
processing job it takes a batch of pending emails, marks them taken and starts **one thread
per email**; each thread renders, sends through boto3 and writes its status with its own
database round trip; there is **no retry policy** (a failed send is ``failed``).

Where the model is kinder than the original, on purpose and so that the comparison is
about the design, not about accidents:

* live threads are capped at ``--threads`` (200): the original started a thread for every
  email of the polled batch, which at 500,000 emails would not survive this machine;
* one boto3 client (thread-safe) is shared by every thread, and database connections come
  from a pool of ``--db-connections`` (32), held only for the status update (MariaDB's
  default ``max_connections``, 151, would not allow one per thread anyway);
* the template is compiled once per job, not per email.

    python -m bench.peers.eed --emails 2000 [--threads 200] [--poll-delay 1.0]

Prints one JSON line (see ``common.peer_result``). Bounded by the job and ``--timeout``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from bench.measure import ResourceMeter
from bench.peers.cli import add_common_arguments, setting
from bench.peers.common import (
    EMAIL_COLUMNS,
    JobInfo,
    StatementRenderer,
    boto3_ses_client,
    finish_job,
    load_job,
    mark_failed,
    mark_sent,
    peer_result,
    send_request,
)
from bench.workload import Workload, email_counts, first_send_seconds, start_job


class ConnectionPool:
    """At most ``size`` pymysql connections, reused; a thread waits for a free one.

    MariaDB's default ``max_connections`` (151) is below the thread cap, so a connection
    per thread is not possible here; the original ran with a pool too.
    """

    def __init__(self, work: Workload, size: int) -> None:
        self._work = work
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._free = threading.BoundedSemaphore(size)
        self._all: list[Any] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        with self._free:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._work.connect()
                with self._lock:
                    self._all.append(conn)
            try:
                yield conn
            finally:
                self._idle.put(conn)

    def close(self) -> None:
        for conn in self._all:
            conn.close()


class JobManager:
    """The poll loop and its email threads."""

    def __init__(
        self,
        work: Workload,
        endpoint_url: str,
        threads: int,
        batch: int,
        poll_delay: float,
        db_connections: int,
    ) -> None:
        self.work = work
        self.max_threads = threads
        self.batch = batch
        self.poll_delay = poll_delay
        self.ses = boto3_ses_client(endpoint_url, max_connections=threads)
        self.pool = ConnectionPool(work, db_connections)
        self.errors = 0
        self.last_error: str | None = None
        self.slots = threading.BoundedSemaphore(threads)
        self.live = 0
        self.live_lock = threading.Lock()
        self.threads_started = 0
        self.polls = 0
        self._renderers: dict[int, tuple[JobInfo, StatementRenderer]] = {}

    def run(self, deadline: float) -> bool:
        """Poll until no job is processing; False if the deadline came first."""
        conn = self.work.connect()
        try:
            while time.monotonic() < deadline:
                self.polls += 1
                with conn.cursor() as cur:
                    cur.execute("SELECT id FROM delivery_job WHERE status = 'processing'")
                    job_ids = [row[0] for row in cur.fetchall()]
                    if not job_ids:
                        return True
                    finished = [self._poll_job(cur, job_id) for job_id in job_ids]
                if all(finished):
                    return True  # do not charge the model a last, idle poll delay
                time.sleep(self.poll_delay)  # the fixed delay of the original
            return False
        finally:
            conn.close()

    def _poll_job(self, cur: Any, job_id: int) -> bool:
        """Start threads for the job's next pending emails; True once the job is done."""
        if job_id not in self._renderers:
            job = load_job(cur, job_id)
            self._renderers[job_id] = (job, StatementRenderer.load(cur, job.template_name))
        job, renderer = self._renderers[job_id]
        with self.live_lock:
            free = self.max_threads - self.live
        if free > 0:
            cur.execute(
                f"SELECT {EMAIL_COLUMNS} FROM delivery_email WHERE job_id = %s"  # noqa: S608 - a constant
                " AND status = 'pending' ORDER BY id LIMIT %s",
                (job_id, min(self.batch, free)),
            )
            rows = cur.fetchall()
            if rows:
                ids = [row[0] for row in rows]
                # pymysql expands a tuple parameter into "(1, 2, ...)".
                cur.execute(
                    "UPDATE delivery_email SET status = 'sending' WHERE id IN %s", (tuple(ids),)
                )
            for row in rows:
                self.slots.acquire()
                with self.live_lock:
                    self.live += 1
                self.threads_started += 1
                threading.Thread(target=self._send_one, args=(job, renderer, row)).start()
        cur.execute(
            "SELECT COUNT(*) FROM delivery_email WHERE job_id = %s"
            " AND status IN ('pending', 'sending')",
            (job_id,),
        )
        if cur.fetchone()[0] > 0:
            return False
        finish_job(cur, job_id)
        return True

    def _send_one(self, job: JobInfo, renderer: StatementRenderer, row: tuple[Any, ...]) -> None:
        """One email's thread: render, send, record (no retries: the original had none)."""
        try:
            try:
                request = send_request(job, row, renderer, self.work.attachments_dir)
                message_id = self.ses.send_email(**request)["MessageId"]
            except Exception as exc:  # any failure of this email is its status, not a crash
                with self.pool.connection() as conn, conn.cursor() as cur:
                    mark_failed(cur, row[0], f"{type(exc).__name__}: {exc}")
            else:
                with self.pool.connection() as conn, conn.cursor() as cur:
                    mark_sent(cur, row[0], message_id)
        except Exception as exc:
            # The status could not be written: the email stays "sending", as it would
            # have in the original; the manager must still get its thread slot back.
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
        finally:
            with self.live_lock:
                self.live -= 1
            self.slots.release()

    def close(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.live_lock:
                if self.live == 0:
                    break
            time.sleep(0.05)
        self.pool.close()
        self.ses.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.eed", description=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--threads", type=int, default=200, help="cap on live email threads")
    parser.add_argument("--batch", type=int, default=200, help="emails taken per job per poll")
    parser.add_argument("--poll-delay", type=float, default=1.0, help="seconds between polls")
    parser.add_argument("--db-connections", type=int, default=32, help="connection pool size")
    args = parser.parse_args(argv)

    with setting(args) as where:
        manager = JobManager(
            where.work,
            where.endpoint_url,
            args.threads,
            args.batch,
            args.poll_delay,
            args.db_connections,
        )
        sent_before = where.simulator.sent_count() if where.simulator else None
        with ResourceMeter() as meter:
            started_at = start_job(where.work)
            finished = manager.run(time.monotonic() + args.timeout)
            manager.close()
        assert meter.usage is not None
        counts = email_counts(where.work)
        result = peer_result(
            "eed",
            where.work,
            meter.usage,
            counts,
            finished=finished,
            first_send_s=first_send_seconds(where.work, started_at),
            threads=args.threads,
            poll_delay_s=args.poll_delay,
            polls=manager.polls,
            threads_started=manager.threads_started,
            thread_errors=manager.errors,
            last_thread_error=manager.last_error,
        )
        if where.simulator is not None and sent_before is not None:
            result["simulator_accepted"] = where.simulator.sent_count() - sent_before
    print(json.dumps(result))
    return 0 if finished and result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
