"""What a paused job costs a server: a ``delivery-server run`` process beside a paused
job whose emails are all queued with a message each, measured over consecutive windows.

``python -m bench.paused --emails 100000 --window 60`` (add ``--server-tree DIR`` to run
another checkout's server, e.g. the code before a change: ``git archive REV | tar -x -C
DIR``). A fresh MariaDB database is built by that tree's migrations; the job (``paused``)
and its emails (``queued``) are inserted directly, and one message per email is put on
the stand-in's SQS queue, as if the job had been published and then paused. Then one
server process (role ``all``, SES and SQS at the stand-in) starts, and each window
reports:

* CPU seconds of the server process, of ``mariadbd`` and of the stand-in;
* the SQS calls the stand-in answered (receives, visibility changes, deletes);
* how many of the job's emails are ``queued`` and ``pending`` at the window's end.

Nothing is sent (the job stays paused); the stand-in counts any send.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.ingest_events import publish_sqs
from bench.ours import base_env, create_queue, drop_database, mysql_url, recreate_database
from bench.processes import free_port, process_cpu, service_processes
from bench.stand_in import REPO, SimulatorProcess
from bench.workload import connect
from delivery_server.models import QueueMessage, utcnow

DATABASE = "bench_paused"
INSERT_ROWS = 5000
READY_TIMEOUT = 60.0
SQS_CALLS = ("ReceiveMessage", "ChangeMessageVisibility", "ChangeMessageVisibilityBatch")
DELETES = ("DeleteMessage", "DeleteMessageBatch")


@dataclass(frozen=True)
class Window:
    """What one window of the run cost, and where the job's emails were at its end."""

    seconds: float
    server_cpu: float
    mariadb_cpu: float
    stand_in_cpu: float
    calls: dict[str, int]
    queued: int
    pending: int


def insert_paused_job(params: Mapping[str, Any], emails: int) -> tuple[int, list[int]]:
    """A paused job whose ``emails`` emails are all queued; the job and email ids."""
    now = utcnow()
    with connect(params, database=DATABASE) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO delivery_job (name, status, template_name, from_address, created_at,"
            " started_at, total_count) VALUES ('paused', 'paused', 'statement', %s, %s, %s, %s)",
            ("statements@bank.example", now, now, emails),
        )
        job_id = int(cur.lastrowid)
        for start in range(0, emails, INSERT_ROWS):
            rows = [
                (job_id, f"customer{n}@example.com", "{}", "queued", now, now)
                for n in range(start, min(emails, start + INSERT_ROWS))
            ]
            cur.executemany(
                "INSERT INTO delivery_email (job_id, to_address, variables, status,"
                " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s)",
                rows,
            )
        cur.execute("SELECT id FROM delivery_email WHERE job_id = %s ORDER BY id", (job_id,))
        return job_id, [int(row[0]) for row in cur.fetchall()]


def email_counts(params: Mapping[str, Any], job_id: int) -> dict[str, int]:
    with connect(params, database=DATABASE) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT status, COUNT(*) FROM delivery_email WHERE job_id = %s GROUP BY status",
            (job_id,),
        )
        return {str(status): int(count) for status, count in cur.fetchall()}


def run_tree(tree: Path, env: dict[str, str], *args: str) -> None:
    """``delivery-server ARGS`` of that checkout (its own code first on the path)."""
    done = subprocess.run(
        [sys.executable, "-m", "delivery_server", *args],
        env={**env, "PYTHONPATH": str(tree)},
        cwd=tree,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")


def start_server(tree: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "delivery_server", "run"],
            env={**env, "PYTHONPATH": str(tree), "DELIVERY_HTTP_PORT": str(port)},
            cwd=tree,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return proc, port
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server not ready within {READY_TIMEOUT}s")
        time.sleep(0.2)


def sqs_calls(sim: SimulatorProcess) -> dict[str, int]:
    calls = sim.control("/_sim/stats")["sqs"].items()
    return {str(k).removeprefix("AmazonSQS."): int(v) for k, v in calls}


def measure(
    sim: SimulatorProcess,
    server: psutil.Process,
    params: Mapping[str, Any],
    job_id: int,
    seconds: float,
) -> Window:
    mariadb = {k: p for k, p in service_processes().items() if k.startswith(("mariadbd", "mysqld"))}
    before = (process_cpu(server), sum(map(process_cpu, mariadb.values())), sim.cpu_seconds())
    calls_before, started = sqs_calls(sim), time.monotonic()
    time.sleep(seconds)
    after = (process_cpu(server), sum(map(process_cpu, mariadb.values())), sim.cpu_seconds())
    calls_after, elapsed = sqs_calls(sim), time.monotonic() - started
    counts = email_counts(params, job_id)
    return Window(
        seconds=elapsed,
        server_cpu=after[0] - before[0],
        mariadb_cpu=after[1] - before[1],
        stand_in_cpu=after[2] - before[2],
        calls={k: v - calls_before.get(k, 0) for k, v in calls_after.items()},
        queued=counts.get("queued", 0),
        pending=counts.get("pending", 0),
    )


def table(windows: list[Window], emails: int, tree: Path) -> str:
    lines = [
        f"paused job of {emails:,} queued emails; server from {tree}",
        "| window | server CPU-s | mariadbd CPU-s | stand-in CPU-s | receives"
        " | visibility changes | delete calls | queued at end | pending at end |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, w in enumerate(windows, 1):
        receives = w.calls.get("ReceiveMessage", 0)
        hidden = sum(w.calls.get(k, 0) for k in SQS_CALLS[1:])
        deletes = sum(w.calls.get(k, 0) for k in DELETES)
        lines.append(
            f"| {n} ({w.seconds:.0f} s) | {w.server_cpu:.1f} | {w.mariadb_cpu:.1f}"
            f" | {w.stand_in_cpu:.1f} | {receives:,} | {hidden:,} | {deletes:,}"
            f" | {w.queued:,} | {w.pending:,} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.paused", description=__doc__)
    parser.add_argument("--emails", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=60.0, help="seconds per window")
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--server-tree", type=Path, default=REPO, help="checkout to run")
    parser.add_argument("--mysql-host", default="127.0.0.1")
    parser.add_argument("--mysql-port", type=int, default=3306)
    args = parser.parse_args(argv)
    params = {"host": args.mysql_host, "port": args.mysql_port, "user": "root"}
    tree = args.server_tree.resolve()
    recreate_database(params, DATABASE)
    try:
        with SimulatorProcess(ses_latency=0.02) as sim:
            queue_url = create_queue(sim, "bench-paused")
            env = base_env(
                {
                    "DELIVERY_DATABASE_URL": mysql_url(params, DATABASE),
                    "DELIVERY_QUEUE": "sqs",
                    "DELIVERY_SQS_QUEUE_URL": queue_url,
                    "DELIVERY_AWS_ENDPOINT_URL": sim.endpoint_url,
                    "DELIVERY_SENDER": "ses",
                    "DELIVERY_LOG_LEVEL": "warning",
                    "DELIVERY_LOG_FORMAT": "json",
                }
            )
            run_tree(tree, env, "db", "upgrade")
            job_id, ids = insert_paused_job(params, args.emails)
            bodies = [QueueMessage(email_id=i, job_id=job_id).to_body() for i in ids]
            # This process's own SQS client takes the stand-in's fake credentials too.
            os.environ.update({k: env[k] for k in env if k.startswith("AWS_")})
            asyncio.run(publish_sqs(sim.endpoint_url, queue_url, bodies, 0.0))
            with tempfile.TemporaryDirectory() as logs:
                proc, _ = start_server(tree, env, Path(logs) / "server.log")
                try:
                    server = psutil.Process(proc.pid)
                    windows = [
                        measure(sim, server, params, job_id, args.window)
                        for _ in range(args.windows)
                    ]
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
            sent = sim.sent_count()
    finally:
        drop_database(params, DATABASE)
    print(table(windows, args.emails, tree))
    print(f"emails sent while paused: {sent}")
    command = " ".join(["python -m bench.paused", *(argv if argv is not None else sys.argv[1:])])
    print(f"reproduce: {command}  (PYTHONPATH={os.path.relpath(REPO)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
