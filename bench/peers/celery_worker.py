"""The Celery side of the Celery peer: the app, the one task, and the worker entry point.

    python -m bench.peers.celery_worker --broker redis://127.0.0.1:6379/11 \
        --database delivery_bench_peers --endpoint http://127.0.0.1:PORT \
        --attachments-dir DIR -- worker --pool threads --concurrency 32

Everything after ``--`` goes to Celery's own ``worker`` command line. Per process (and per
thread for the database connection) the task keeps what any tuned Celery deployment
keeps: one boto3 client, one connection, the compiled template of each job.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from celery import Celery, Task
from celery.signals import worker_process_init

from bench.peers.common import (
    EMAIL_COLUMNS,
    JobInfo,
    StatementRenderer,
    boto3_ses_client,
    load_job,
    mark_failed,
    mark_sent,
    send_request,
)
from bench.workload import connect

TASK_NAME = "bench.send_statement"
QUEUE_NAME = "bench-statements"
MAX_RETRIES = 2  # three attempts in all, as our server
RETRY_CODES = frozenset({"TooManyRequestsException", "LimitExceededException"})


@dataclass
class WorkerConfig:
    """Where a worker process finds the database, the stand-in and the attachments."""

    conn_params: dict[str, Any]
    database: str
    endpoint_url: str
    attachments_dir: Path
    max_connections: int = 64
    _local: threading.local = field(default_factory=threading.local)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ses: Any = None
    _jobs: dict[int, tuple[JobInfo, StatementRenderer]] = field(default_factory=dict)

    def connection(self) -> Any:
        """This thread's database connection (pymysql connections are not thread-safe)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.conn_params, database=self.database)
            self._local.conn = conn
        return conn

    def ses(self) -> Any:
        """This process's boto3 client (created after the fork, shared by threads)."""
        with self._lock:
            if self._ses is None:
                self._ses = boto3_ses_client(self.endpoint_url, self.max_connections)
            return self._ses

    def warm_up(self) -> None:
        """Create this process's SES client and a connection ahead of the first task."""
        self._ses = None  # a client inherited through fork is not this process's own
        self.ses()
        self.connection()

    def job(self, cur: Any, job_id: int) -> tuple[JobInfo, StatementRenderer]:
        with self._lock:
            cached = self._jobs.get(job_id)
        if cached is None:
            job = load_job(cur, job_id)
            cached = (job, StatementRenderer.load(cur, job.template_name))
            with self._lock:
                self._jobs[job_id] = cached
        return cached


def make_app(broker_url: str, config: WorkerConfig | None = None) -> Celery:
    """A Celery app on Redis, tuned for many short I/O-bound tasks (see comments)."""
    app = Celery("bench_peer", broker=broker_url)
    app.conf.update(
        task_default_queue=QUEUE_NAME,
        task_ignore_result=True,  # status lives in MariaDB; a result backend would be waste
        task_serializer="json",
        accept_content=["json"],
        worker_disable_rate_limits=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=4,  # Celery's default; tasks are short and uniform
    )
    if config is not None:
        _register_task(app, config)
    return app


def _register_task(app: Celery, config: WorkerConfig) -> None:
    @app.task(name=TASK_NAME, bind=True, max_retries=MAX_RETRIES)
    def send_statement(self: Task, email_id: int, job_id: int) -> None:
        """Load the email, render, send through SES, record the outcome."""
        conn = config.connection()
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT {EMAIL_COLUMNS} FROM delivery_email WHERE id = %s",  # noqa: S608 - a constant
                (email_id,),
            )
            row = cur.fetchone()
            if row is None:
                return
            job, renderer = config.job(cur, job_id)
            try:
                request = send_request(job, row, renderer, config.attachments_dir)
                message_id = config.ses().send_email(**request)["MessageId"]
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                retryable = code in RETRY_CODES or status >= 500
                if retryable and self.request.retries < MAX_RETRIES:
                    countdown = (2**self.request.retries) * random.uniform(0.5, 1.5)
                    raise self.retry(exc=exc, countdown=countdown) from exc
                mark_failed(cur, email_id, f"{code}: {exc}")
            except Exception as exc:  # any other failure of this email is its status
                mark_failed(cur, email_id, f"{type(exc).__name__}: {exc}")
            else:
                mark_sent(cur, email_id, message_id)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, celery_args = argv, ["worker"]
    if "--" in argv:
        split = argv.index("--")
        own, celery_args = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(prog="python -m bench.peers.celery_worker")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--db-host", default="127.0.0.1")
    parser.add_argument("--db-port", type=int, default=3306)
    parser.add_argument("--db-user", default="root")
    parser.add_argument("--db-password", default="")
    parser.add_argument("--database", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--attachments-dir", type=Path, required=True)
    parser.add_argument("--max-connections", type=int, default=64)
    args = parser.parse_args(own)
    config = WorkerConfig(
        conn_params={
            "host": args.db_host,
            "port": args.db_port,
            "user": args.db_user,
            "password": args.db_password,
        },
        database=args.database,
        endpoint_url=args.endpoint,
        attachments_dir=args.attachments_dir,
        max_connections=args.max_connections,
    )
    # Root in a container or a CI box: Celery's warning says nothing the bench needs.
    warnings.filterwarnings("ignore", message="You're running the worker with superuser")
    app = make_app(args.broker, config)
    # A tuned deployment opens its client and connection before taking tasks, not
    # inside the first one: per pool process (prefork) or in the one process (threads).
    if "prefork" in celery_args:
        worker_process_init.connect(lambda **_: config.warm_up(), weak=False)
    else:
        config.warm_up()
    app.worker_main(argv=celery_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
