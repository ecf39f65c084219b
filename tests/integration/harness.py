"""Building blocks for end-to-end tests: real MariaDB, moto (behind a fault proxy), serve()."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.message
import email.policy
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import boto3

from delivery_server.app import Listening, open_store, serve, upgrade_database
from delivery_server.models import Job, JobStatus, NewEmail, Template
from delivery_server.ports import Store
from delivery_server.settings import Settings, load_settings

FROM_ADDRESS = "statements@bank.example"
STATEMENT = Template(
    name="statement",
    locale="en",
    version=0,
    subject="Statement {{ period }} for {{ name }}",
    text_body="Dear {{ name }},\nyour balance on account {{ account }} is {{ balance }}.\n",
    html_body="<p>Dear {{ name }}</p><p>Balance on {{ account }}: {{ balance }}</p>",
)


def aws_client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


def create_sqs_queue(endpoint: str, name: str = "delivery") -> str:
    url: str = aws_client("sqs", endpoint).create_queue(QueueName=name)["QueueUrl"]
    return url


def verify_sender(endpoint: str, identity: str = "bank.example") -> None:
    aws_client("ses", endpoint).verify_domain_identity(Domain=identity)


def aws_settings(
    database_url: str, endpoint: str, queue_url: str, tmp_path: Path, **overrides: Any
) -> Settings:
    """Settings for a server on MariaDB + SQS + SES, fast enough for tests."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "queue": "sqs",
        "sqs_queue_url": queue_url,
        "aws_endpoint_url": endpoint,
        "sender": "ses",
        "http_port": 0,
        "poll_interval": 0.1,
        "retry_base_delay": 0.2,
        "reconcile_interval": 0.5,
        "shutdown_grace": 5.0,
        "receive_wait": 1.0,
        "concurrency": 16,
        "attachments_dir": tmp_path,
        "log_level": "warning",
    }
    values.update(overrides)
    return load_settings(**values)


async def create_job(
    store: Store,
    emails: Sequence[NewEmail],
    *,
    template: Template = STATEMENT,
    start: bool = True,
) -> Job:
    await store.add_template(template)
    job = await store.create_job("test job", template.name, FROM_ADDRESS)
    await store.add_emails(job.id, emails)
    if start:
        job = await store.set_job_status(job.id, JobStatus.PROCESSING, [JobStatus.DRAFT])
    return job


def customer(n: int, domain: str = "customers.example", **extra: Any) -> NewEmail:
    variables = {
        "name": f"Customer {n}",
        "account": f"DE{n:08d}",
        "balance": f"{n * 7 % 1000}.{n % 100:02d}",
        "period": "2026",
    }
    return NewEmail(to_address=f"c{n}@{domain}", variables=variables, **extra)


async def wait_for_job(
    store: Store, job_id: int, timeout: float = 60.0, done: Sequence[JobStatus] | None = None
) -> Job:
    """Wait until the job leaves ``processing`` (or reaches one of ``done``)."""
    wanted = set(done or (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED))
    deadline = time.monotonic() + timeout
    while True:
        job = await store.job(job_id)
        if job.status in wanted:
            return job
        if time.monotonic() > deadline:
            summary = await store.job_summary(job_id)
            raise AssertionError(f"job {job_id} still {job.status}: {summary.counts}")
        await asyncio.sleep(0.05)


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition"
) -> None:
    """Like ``tests.conftest.wait_for``, without blocking the event loop (the predicate
    runs in a thread, so it may do blocking I/O)."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


class RunningServer:
    """serve() in a task of this event loop, with its HTTP port."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        self.stop = asyncio.Event()
        self.listening = Listening()
        self._kwargs = kwargs
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunningServer:
        self._task = asyncio.create_task(
            serve(self.settings, stop=self.stop, listening=self.listening, **self._kwargs)
        )
        started = asyncio.create_task(self.listening.started.wait())
        await asyncio.wait({started, self._task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            started.cancel()
            self._task.result()
            raise AssertionError("server stopped before it started")
        assert started.done(), "server did not start"
        return self

    @property
    def http_port(self) -> int:
        port = self.listening.http_port
        assert port is not None
        return port

    @property
    def api_port(self) -> int:
        port = self.listening.api_port
        assert port is not None, "no API listener: set DELIVERY_API_PORT"
        return port

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, timeout=60)


async def http_get(port: int, path: str) -> tuple[int, str]:
    """GET a path of a server's HTTP endpoint on loopback."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, await resp.text()


@contextlib.asynccontextmanager
async def prepared_store(settings: Settings) -> AsyncIterator[Store]:
    await upgrade_database(settings)
    async with open_store(settings) as store:
        yield store


@dataclass(frozen=True)
class ReceivedEmail:
    """One email as moto's SES received it."""

    to: tuple[str, ...]
    subject: str
    body: str  # the HTML part for Simple content (what moto keeps), the raw MIME text for Raw
    raw: email.message.EmailMessage | None


def moto_sent(endpoint: str) -> list[ReceivedEmail]:
    """Every email moto's SES accepted since the last reset."""
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=10) as resp:
        data = json.loads(resp.read())["ses"]
    received = [
        ReceivedEmail(
            to=tuple(m["destinations"]["ToAddresses"]),
            subject=m["subject"],
            body=m["body"],
            raw=None,
        )
        for m in data.get("Message", [])
    ]
    for m in data.get("RawMessage", []):
        parsed = email.message_from_string(m["raw_data"], policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        received.append(
            ReceivedEmail(
                to=tuple(sorted(set(m["destinations"]))),
                subject=str(parsed["Subject"]),
                body=m["raw_data"],
                raw=parsed,
            )
        )
    return received
