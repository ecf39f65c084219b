"""Our server on the bench's work: real ``delivery-server run`` processes, measured from outside.

Everything goes through the product's real path: a fresh MariaDB database built by our own
migrations (``delivery-server db upgrade``), a job registered the way upstream systems do it
(rows inserted in ``draft``, then the job set to ``processing``), SQS and SES v2 through
aiobotocore against the stand-in. What is measured, and how:

* **wall**: from just before the job is set to ``processing`` until the job row says it
  finished (polled every 0.1 s): end to end, the job's own bookkeeping included;
* **CPU**: user + system seconds of the server processes only (psutil), from the moment
  they answer ``/readyz`` (start-up is not a per-email cost) to the end of the job;
  MariaDB and the stand-in are reported separately, and so is what the rest of the
  machine used meanwhile (a shared box: other work shows up there, not in our figures);
* **peak RSS**: the largest resident set of a server process, sampled at 10 Hz;
* **first send**: from the ``processing`` update to the stand-in's first accepted send;
* **exactly once**: the stand-in's accepted count and its duplicate count (by the
  ``email_id`` tag every send carries), and the database: every email ``sent``, with as
  many distinct provider message ids as emails;
* **database**: mariadbd's process CPU per email (``db_ms_per_email``), and the statements
  our servers sent it per email (``db_round_trips_per_email``), counted by MariaDB for the
  user the servers connect as (``bench.dbstats``): the bench's own polling is not in it;
* **tracking on** (``tracking=True``): the servers also run their tracker on the stand-in's
  SES events queue; the job's figures above still end with the job, and the run then waits
  until every event is recorded before it stops the servers (``bench.tracking`` says what
  is measured there: events/s, the drain after the job, the events' own checks).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import psutil

from bench.dbstats import BenchUser, UserStatements, bench_user
from bench.processes import (
    RssSampler,
    ServerProcesses,
    process_cpu,
    py_spy,
    running_servers,
    service_processes,
)
from bench.stand_in import REPO, SimulatorProcess
from bench.tracking import figures, wait_ingested
from bench.workload import Workload, connect, create_schema_and_job

SETTLE_SECONDS = 1.0
POLL_INTERVAL = 1.0  # the server's default DELIVERY_POLL_INTERVAL
JOB_POLL = 0.1
PROGRESS_EVERY = 10.0
FINISHED = ("completed", "failed", "cancelled")


def mysql_url(params: Mapping[str, Any], database: str) -> str:
    user = params.get("user", "root")
    password = params.get("password", "")
    auth = f"{user}:{password}" if password else str(user)
    return f"mysql://{auth}@{params.get('host', '127.0.0.1')}:{params.get('port', 3306)}/{database}"


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of our child processes: no stray ``DELIVERY_*`` settings of the
    caller (an unknown one is a start-up error), fake AWS credentials, the repository
    importable."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DELIVERY_")}
    env.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",  # noqa: S106 - the stand-in takes any
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    env.update(extra or {})
    return env


def create_queue(sim: SimulatorProcess, name: str) -> str:
    """CreateQueue on the stand-in (SQS JSON protocol); return the queue URL."""
    request = urllib.request.Request(  # noqa: S310 - the stand-in's own loopback URL
        f"{sim.endpoint_url}/",
        data=json.dumps({"QueueName": name}).encode(),
        headers={
            "X-Amz-Target": "AmazonSQS.CreateQueue",
            "Content-Type": "application/x-amz-json-1.0",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return str(json.loads(response.read())["QueueUrl"])


def recreate_database(params: Mapping[str, Any], database: str) -> None:
    with connect(params) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
        cur.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")


def drop_database(params: Mapping[str, Any], database: str) -> None:
    with connect(params) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{database}`")


def upgrade_schema(env: dict[str, str], timeout: float = 120.0) -> None:
    """``delivery-server db upgrade``: our own migrations build the schema."""
    done = subprocess.run(
        [sys.executable, "-m", "delivery_server", "db", "upgrade"],
        env=env,
        cwd=REPO,
        check=False,
        timeout=timeout,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"db upgrade exited {done.returncode}: {done.stderr[-2000:]}")


def set_processing(work: Workload) -> float:
    """Hand the job over as upstream systems do; return the wall clock just before."""
    with work.connect() as conn, conn.cursor() as cur:
        started = time.time()
        cur.execute(
            "UPDATE delivery_job SET status = 'processing' WHERE id = %s AND status = 'draft'",
            (work.job_id,),
        )
    return started


def wait_finished(
    work: Workload, servers: ServerProcesses, sim: SimulatorProcess, deadline: float
) -> str | None:
    """Poll the job row until it is finished; None on timeout. Progress goes to stderr."""
    next_progress = time.monotonic() + PROGRESS_EVERY
    with work.connect() as conn, conn.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute("SELECT status FROM delivery_job WHERE id = %s", (work.job_id,))
            (status,) = cur.fetchone()
            if status in FINISHED:
                return str(status)
            servers.check_alive()
            if time.monotonic() >= next_progress:
                next_progress += PROGRESS_EVERY
                print(f"  ours: {sim.sent_count():,} / {work.emails:,} sent", file=sys.stderr)
            time.sleep(JOB_POLL)
    return None


def verify(work: Workload) -> dict[str, Any]:
    """What the database says: counts by status, distinct message ids, attempts."""
    with work.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT status, COUNT(*) FROM delivery_email WHERE job_id = %s GROUP BY status",
            (work.job_id,),
        )
        counts = {f"db_{status}": int(n) for status, n in cur.fetchall()}
        cur.execute(
            "SELECT COUNT(DISTINCT provider_message_id), COALESCE(SUM(attempts), 0)"
            " FROM delivery_email WHERE job_id = %s AND status = 'sent'",
            (work.job_id,),
        )
        distinct_ids, attempts = cur.fetchone()
        cur.execute("SELECT started_at FROM delivery_job WHERE id = %s", (work.job_id,))
        (job_started,) = cur.fetchone()
    return {
        **counts,
        "db_distinct_message_ids": int(distinct_ids),
        "db_attempts": int(attempts),
        # When the publisher picked the job up (naive UTC, the server's clock = ours).
        "job_picked_up_at": job_started.replace(tzinfo=UTC).timestamp() if job_started else None,
    }


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU seconds used so far by our servers, the services, the stand-in, the machine."""

    servers: float
    services: dict[str, float]
    simulator: float
    machine: float

    @classmethod
    def take(
        cls, procs: list[psutil.Process], services: dict[str, psutil.Process], sim: SimulatorProcess
    ) -> CpuSnapshot:
        return cls(
            servers=sum(process_cpu(p) for p in procs),
            services={key: process_cpu(p) for key, p in services.items()},
            simulator=sim.cpu_seconds(),
            machine=_busy(psutil.cpu_times()),
        )

    def mariadb_since(self, before: CpuSnapshot) -> float:
        return sum(
            cpu - before.services[key]
            for key, cpu in self.services.items()
            if key.startswith(("mariadbd", "mysqld"))
        )


def _prepare(
    args: Any,
    sim: SimulatorProcess,
    params: Mapping[str, Any],
    db_user: BenchUser,
    emails: int,
    tracking: bool,
) -> tuple[Workload, dict[str, str], dict[str, str] | None, float]:
    """A fresh database with the job in ``draft``, a clean stand-in, the servers' settings
    (they connect as ``db_user``, whose statements MariaDB counts)."""
    database = args.database
    recreate_database(params, database)
    upgrade_schema(base_env({"DELIVERY_DATABASE_URL": mysql_url(params, database)}))
    db_env = {"DELIVERY_DATABASE_URL": mysql_url(db_user.server_params, database)}
    created = time.perf_counter()
    work = create_schema_and_job(
        params,
        emails,
        args.attachment_ratio,
        database=database,
        fresh=False,
        create_tables=False,
        attachments_dir=args.attachments_dir,
    )
    create_s = time.perf_counter() - created
    sim.control("/_sim/reset", {})  # a clean sent log: first send and duplicates are ours
    queue_url = create_queue(sim, f"bench-{database}")
    settings = {
        **db_env,
        "DELIVERY_QUEUE": "sqs",
        "DELIVERY_SQS_QUEUE_URL": queue_url,
        "DELIVERY_AWS_ENDPOINT_URL": sim.endpoint_url,
        "DELIVERY_SENDER": "ses",
        "DELIVERY_ATTACHMENTS_DIR": str(work.attachments_dir),
        "DELIVERY_LOG_FORMAT": "json",
    }
    settings.update(item.split("=", 1) for item in args.server_env)
    tracker: dict[str, str] | None = None
    if tracking:
        if sim.events_queue_url is None:
            raise ValueError("tracking needs a stand-in that publishes SES events")
        events = {"DELIVERY_EVENTS_QUEUE_URL": sim.events_queue_url}
        if args.tracker_process:  # the senders as without tracking; one tracker apart
            tracker = base_env({**settings, **events})
        else:
            settings.update(events)
    return work, base_env(settings), tracker, create_s


def run_ours(
    args: Any,
    sim: SimulatorProcess,
    params: Mapping[str, Any],
    run_dir: Path,
    *,
    emails: int,
    tracking: bool,
) -> dict[str, Any]:
    """One job of ``emails`` through ``args.servers`` server processes; the figures.

    With ``tracking`` the servers consume the stand-in's events queue (``sim`` must
    publish events), and the run waits until every event is recorded (bounded by
    ``args.timeout``) before it stops them; the job's own figures end with the job."""
    with bench_user(params, args.database) as db_user:
        return _run_ours(args, sim, params, run_dir, db_user, emails=emails, tracking=tracking)


def _run_ours(
    args: Any,
    sim: SimulatorProcess,
    params: Mapping[str, Any],
    run_dir: Path,
    db_user: BenchUser,
    *,
    emails: int,
    tracking: bool,
) -> dict[str, Any]:
    work, env, tracker_env, create_s = _prepare(args, sim, params, db_user, emails, tracking)
    servers = ServerProcesses(env, run_dir, args.servers, tracker_env)
    services = service_processes()
    tracked: dict[str, Any] = {}
    with running_servers(servers), contextlib.ExitStack() as profiles:
        servers.wait_ready()
        # Start-up settles for a second; then the job arrives at a random moment of the
        # publisher's poll cycle (DELIVERY_POLL_INTERVAL, 1 s), as upstream jobs do:
        # right after a poll it waits a whole interval, right before one hardly at all.
        phase = random.uniform(0.0, POLL_INTERVAL)
        time.sleep(SETTLE_SECONDS + phase)
        procs = servers.psutil_procs()
        if args.py_spy:
            for index, proc in enumerate(servers.procs):
                profiles.enter_context(py_spy(proc.pid, run_dir / f"server-{index}.pyspy.txt"))
        statements_before = db_user.statements()
        before = CpuSnapshot.take(procs, services, sim)
        with RssSampler(procs) as rss:
            started = set_processing(work)
            status = wait_finished(work, servers, sim, time.monotonic() + args.timeout)
            ended = time.time()
        after = CpuSnapshot.take(procs, services, sim)
        statements = _statements_since(db_user, statements_before)
        if tracking:
            drain = wait_ingested(work, sim, servers, time.monotonic() + args.timeout)
            tracked = figures(work, sim, servers, drain)
            drained = sum(process_cpu(p) for p in procs)
            tracked["drain_cpu_s"] = round(drained - after.servers, 2)
    sent_log = sim.control("/_sim/sent")
    calls = sim.control("/_sim/stats")
    checks = verify(work)
    wall = ended - started
    sent = checks.get("db_sent", 0)
    first = sent_log.get("first_accepted_at")
    cpu = after.servers - before.servers
    mariadb_cpu = after.mariadb_since(before)
    sim_cpu = after.simulator - before.simulator
    machine_busy = after.machine - before.machine
    exactly_once = (
        status is not None
        and sent == work.emails
        and sent_log["count"] == work.emails
        and sent_log["duplicates"] == 0
        and checks["db_distinct_message_ids"] == work.emails
    )
    picked_up = checks["job_picked_up_at"]
    return {
        "run": "ours",
        "tracking": tracking,
        "emails": work.emails,
        "servers": args.servers,
        "tracker_process": tracker_env is not None,
        "status": status,
        "sent": sent,
        "failed": checks.get("db_failed", 0) + checks.get("db_unknown", 0),
        "wall_s": round(wall, 3),
        "send_span_s": round(sent_log["last_accepted_at"] - first, 3) if first else None,
        "cpu_s": round(cpu, 3),
        "emails_per_s": round(sent / wall, 1) if wall > 0 else None,
        "emails_per_cpu_s": round(sent / cpu, 1) if cpu > 0 else None,
        "cpu_s_per_1000": round(cpu / sent * 1000, 3) if sent else None,
        "peak_rss_mb": round(max(rss.peak) / 2**20, 1),
        "peak_rss_total_mb": round(rss.peak_total / 2**20, 1),
        "final_rss_mb": round(max(rss.last) / 2**20, 1),
        "start_phase_s": round(phase, 3),
        "first_send_s": round(first - started, 3) if first else None,
        "picked_up_s": round(picked_up - started, 3) if picked_up else None,
        "startup_cpu_s": round(before.servers, 3),
        "mariadb_cpu_s": round(mariadb_cpu, 2),
        "simulator_cpu_s": round(sim_cpu, 2),
        "other_cpu_s": round(max(0.0, machine_busy - cpu - mariadb_cpu - sim_cpu), 2),
        "machine_cpu_s": round(machine_busy, 2),
        "db_ms_per_email": round(mariadb_cpu / sent * 1000, 3) if sent else None,
        "db_round_trips_per_email": (
            round(statements.statements / sent, 3) if statements and sent else None
        ),
        "db_statements": statements.as_dict() if statements else None,
        "simulator_accepted": sent_log["count"],
        "simulator_duplicates": sent_log["duplicates"],
        "exactly_once": exactly_once,
        "create_job_s": round(create_s, 1),
        "aws_calls": {k.removeprefix("AmazonSQS."): v for k, v in calls["sqs"].items()}
        | calls["ses"],
        "log_dir": str(run_dir),
        **tracked,
        **checks,
    }


def _statements_since(db_user: BenchUser, before: UserStatements | None) -> UserStatements | None:
    """The servers' statements since ``before`` (None when MariaDB does not count them)."""
    now = db_user.statements()
    return now.since(before) if now is not None and before is not None else None


def _busy(times: Any) -> float:
    """Busy CPU seconds of the whole machine (all cores) from ``psutil.cpu_times()``."""
    idle = times.idle + getattr(times, "iowait", 0.0)
    return float(
        sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    )
