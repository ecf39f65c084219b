"""The usual Python choice, on the bench's work: Celery workers, Redis broker, boto3 sends.

The driver (this process) plays the dispatcher every Celery deployment writes: when the
job enters ``processing`` it streams the job's pending email ids from MariaDB, marks them
``queued`` and publishes one task per email carrying only ids (as our queue message does).
Workers (child processes of this one) load the row, render, send, record the status. The
driver waits for the job's emails to settle (one COUNT query every 0.25 s) and settles it.

Tuning, and why. Each send waits ~20 ms on the network, so a worker must keep many sends
in flight. Of the pools and concurrencies tried (docs/benchmarks.md, "Figures behind
choices in the code", has the table), ``--pool threads --concurrency 32`` in one worker
process gave the most emails per CPU-second and the least memory: it is the default.
Prefork pays an interpreter, a boto3 client and a connection per process plus pipe traffic
between the pool and its parent; threads keep 32 sends in flight in one process, and the
GIL costs little while sends mostly wait. (gevent/eventlet pools are not installed here.)
Also tuned: no result backend, rate limits off, log level WARNING (Celery logs every task
at INFO), no gossip/mingle/heartbeat, client and connection opened before the first task.

    python -m bench.peers.celery_peer --emails 2000 [--pool threads] [--concurrency 32]

Prints one JSON line (see ``common.peer_result``). Redis db ``--redis-db`` (default 11) is
flushed first. Bounded by the job and ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import redis

from bench.measure import ResourceMeter
from bench.peers.celery_worker import QUEUE_NAME, TASK_NAME, make_app
from bench.peers.cli import Setting, add_common_arguments, setting
from bench.peers.common import finish_job, peer_result
from bench.workload import Workload, email_counts, first_send_seconds, start_job

REPO = Path(__file__).resolve().parents[2]
PUBLISH_CHUNK = 1000
READY_TIMEOUT = 60.0
SETTLE_POLL = 0.25


def _worker_command(args: argparse.Namespace, where: Setting, index: int) -> list[str]:
    work = where.work
    params = work.conn_params
    return [
        sys.executable,
        "-m",
        "bench.peers.celery_worker",
        "--broker",
        args.broker,
        "--db-host",
        str(params.get("host", "127.0.0.1")),
        "--db-port",
        str(params.get("port", 3306)),
        "--db-user",
        str(params.get("user", "root")),
        "--db-password",
        str(params.get("password", "")),
        "--database",
        work.database,
        "--endpoint",
        where.endpoint_url,
        "--attachments-dir",
        str(work.attachments_dir),
        "--max-connections",
        str(max(args.concurrency, 10)),
        "--",
        "worker",
        "--pool",
        args.pool,
        "--concurrency",
        str(args.concurrency),
        "--queues",
        QUEUE_NAME,
        "--hostname",
        f"bench{index}@%h",
        "--loglevel",
        "WARNING",  # Celery logs every task at INFO: a real deployment turns that down
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def start_workers(args: argparse.Namespace, where: Setting) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return [
        # The worker prints its banner on stdout, which is this peer's JSON result line.
        subprocess.Popen(
            _worker_command(args, where, i), env=env, cwd=REPO, stdout=subprocess.DEVNULL
        )
        for i in range(args.workers)
    ]


def wait_ready(app: Any, workers: int) -> None:
    """Wait until every worker answers a ping (bounded)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=0.5) or []
        if len(replies) >= workers:
            return
    raise RuntimeError(f"Celery workers not ready within {READY_TIMEOUT}s")


def tree_cpu(procs: list[subprocess.Popen[bytes]]) -> float:
    """CPU used so far by the worker processes and their pool children."""
    total = 0.0
    for popen in procs:
        try:
            root = psutil.Process(popen.pid)
            for proc in [root, *root.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


def publish(app: Any, work: Workload) -> int:
    """Queue every pending email of the job, one task per email, in streamed chunks."""
    published = 0
    last_id = 0
    with work.connect() as conn, conn.cursor() as cur, app.producer_or_acquire() as producer:
        while True:
            cur.execute(
                "SELECT id FROM delivery_email WHERE job_id = %s AND status = 'pending'"
                " AND id > %s ORDER BY id LIMIT %s",
                (work.job_id, last_id, PUBLISH_CHUNK),
            )
            ids = [row[0] for row in cur.fetchall()]
            if not ids:
                return published
            cur.execute("UPDATE delivery_email SET status = 'queued' WHERE id IN %s", (tuple(ids),))
            for email_id in ids:
                app.send_task(TASK_NAME, args=(email_id, work.job_id), producer=producer)
            published += len(ids)
            last_id = ids[-1]


def wait_settled(work: Workload, deadline: float) -> bool:
    """Wait until no email of the job is pending, queued or sending; settle the job."""
    with work.connect() as conn, conn.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute(
                "SELECT COUNT(*) FROM delivery_email WHERE job_id = %s"
                " AND status IN ('pending', 'queued', 'sending')",
                (work.job_id,),
            )
            if cur.fetchone()[0] == 0:
                finish_job(cur, work.job_id)
                return True
            time.sleep(SETTLE_POLL)
    return False


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    """Warm shutdown (SIGTERM), then reap, so their CPU time is accounted to us."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def run(args: argparse.Namespace, where: Setting) -> dict[str, Any]:
    redis.Redis.from_url(args.broker).flushdb()
    app = make_app(args.broker)
    sent_before = where.simulator.sent_count() if where.simulator else None
    with ResourceMeter() as meter:
        driver_cpu0 = time.process_time()
        workers = start_workers(args, where)
        try:
            wait_ready(app, args.workers)
            startup_cpu = tree_cpu(workers) + time.process_time() - driver_cpu0
            t0 = time.perf_counter()
            started_at = start_job(where.work)
            published = publish(app, where.work)
            finished = wait_settled(where.work, time.monotonic() + args.timeout)
            run_wall = time.perf_counter() - t0
        finally:
            stop_workers(workers)
    assert meter.usage is not None
    usage = meter.usage
    # Interpreter and worker start-up are not the peer's per-email cost: leave them out,
    # like the wall time before the job started.
    usage = type(usage)(
        wall_s=round(run_wall, 3),
        cpu_s=round(usage.cpu_s - startup_cpu, 3),
        peak_rss_mb=usage.peak_rss_mb,
        service_cpu_s=usage.service_cpu_s,
    )
    result = peer_result(
        "celery",
        where.work,
        usage,
        email_counts(where.work),
        finished=finished,
        first_send_s=first_send_seconds(where.work, started_at),
        pool=args.pool,
        concurrency=args.concurrency,
        workers=args.workers,
        published=published,
        startup_cpu_s=round(startup_cpu, 3),
    )
    if where.simulator is not None and sent_before is not None:
        result["simulator_accepted"] = where.simulator.sent_count() - sent_before
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.celery_peer", description=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--redis-db", type=int, default=11, help="flushed first")
    parser.add_argument("--pool", choices=["threads", "prefork", "solo"], default="threads")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    args = parser.parse_args(argv)
    args.broker = f"redis://127.0.0.1:6379/{args.redis_db}"
    with setting(args) as where:
        result = run(args, where)
    print(json.dumps(result))
    return 0 if result["finished"] and result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
