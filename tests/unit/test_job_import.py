"""Job import: batches, bad rows, --strict, and what happens when an import breaks off.

A small in-memory stand-in for the admin part of the store lets these tests break the
import at a chosen batch; the real store is exercised by tests/integration/test_cli.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from delivery_server.errors import NotFoundError
from delivery_server.job_import import (
    BATCH_SIZE,
    ImportAbortedError,
    ImportRefusedError,
    JobRequest,
    create_job_from_file,
)
from delivery_server.models import Job, JobStatus, NewEmail, Template
from delivery_server.recipients import RecipientsFileError


class FakeAdminStore:
    """Just enough of ``AdminStore`` for an import; ``fail_on_batch`` breaks add_emails."""

    def __init__(
        self, fail_on_batch: int | None = None, failure: BaseException | None = None
    ) -> None:
        self.fail_on_batch = fail_on_batch
        self.failure = failure or ConnectionResetError(
            "connection lost\n[parameters: ('a@example.com',)]"
        )
        self.jobs: dict[int, Job] = {}
        self.batches: list[int] = []  # sizes of the add_emails calls
        self.templates_ = [Template("statement", "en", 1, "s", "t")]

    async def templates(self) -> list[Template]:
        return self.templates_

    async def create_job(
        self,
        name: str,
        template_name: str,
        from_address: str,
        reply_to: str | None = None,
        scheduled_at: datetime | None = None,
        unsubscribe: bool = False,
        send_by: datetime | None = None,
        channel: str = "email",
        target: str | None = None,
        max_segments: int | None = None,
    ) -> Job:
        job = Job(
            len(self.jobs) + 1,
            name,
            JobStatus.DRAFT,
            template_name,
            from_address,
            reply_to,
            scheduled_at,
            unsubscribe=unsubscribe,
            send_by=send_by,
            channel=channel,
            target=target,
            max_segments=max_segments,
        )
        self.jobs[job.id] = job
        return job

    async def add_emails(self, job_id: int, emails: Iterable[NewEmail]) -> int:
        if self.fail_on_batch is not None and len(self.batches) + 1 == self.fail_on_batch:
            raise self.failure
        count = len(list(emails))
        self.batches.append(count)
        return count

    async def set_job_status(
        self, job_id: int, status: JobStatus, expected: Sequence[JobStatus] | None = None
    ) -> Job:
        job = self.jobs[job_id]
        assert expected is None or job.status in expected
        self.jobs[job_id] = job = Job(**{**_fields(job), "status": status})
        return job

    async def job(self, job_id: int) -> Job:
        return self.jobs[job_id]

    async def cancel_job(self, job_id: int) -> int:
        await self.set_job_status(job_id, JobStatus.CANCELLED)
        return 0


def _fields(job: Job) -> dict[str, object]:
    return {name: getattr(job, name) for name in Job.__slots__}


def csv_file(tmp_path: Path, good: int, bad_lines: Sequence[int] = ()) -> Path:
    path = tmp_path / "r.csv"
    with path.open("w", encoding="utf-8") as stream:
        stream.write("email,name\n")
        for line in range(2, good + len(bad_lines) + 2):
            stream.write("broken,X\n" if line in bad_lines else f"c{line}@example.com,N\n")
    return path


def request(path: Path, **changes: object) -> JobRequest:
    return JobRequest(
        template="statement", from_address="bank@example.com", recipients=path, **changes
    )  # type: ignore[arg-type]


async def test_imports_in_batches_then_sets_processing(tmp_path: Path) -> None:
    store = FakeAdminStore()
    seen: list[int] = []
    report = await create_job_from_file(
        store,
        request(csv_file(tmp_path, 2_500, bad_lines=[3, 1_000])),
        on_progress=lambda imported, invalid: seen.append(imported),
    )
    assert store.batches == [BATCH_SIZE, BATCH_SIZE, 500]
    assert seen == [1_000, 2_000, 2_500]
    assert report.imported == 2_500
    assert [(row.line, row.reason[:25]) for row in report.invalid] == [
        (3, "invalid recipient address"),
        (1_000, "invalid recipient address"),
    ]
    assert report.job is not None
    assert report.job.status == JobStatus.PROCESSING
    assert report.job.name == "statement r.csv"


async def test_draft_stays_draft(tmp_path: Path) -> None:
    store = FakeAdminStore()
    report = await create_job_from_file(store, request(csv_file(tmp_path, 3), draft=True))
    assert report.job is not None
    assert report.job.status == JobStatus.DRAFT


async def test_unknown_template_writes_nothing(tmp_path: Path) -> None:
    store = FakeAdminStore()
    with pytest.raises(NotFoundError, match="template 'nope' does not exist"):
        await create_job_from_file(
            store, JobRequest("nope", "bank@example.com", csv_file(tmp_path, 3))
        )
    assert store.jobs == {}


async def test_strict_refuses_the_whole_file(tmp_path: Path) -> None:
    store = FakeAdminStore()
    path = csv_file(tmp_path, 3_000, bad_lines=[2_999])
    with pytest.raises(ImportRefusedError, match="1 row invalid; --strict") as caught:
        await create_job_from_file(store, request(path, strict=True))
    assert [row.line for row in caught.value.report.invalid] == [2_999]
    assert store.jobs == {}
    assert store.batches == []


async def test_a_file_without_valid_rows_creates_no_job(tmp_path: Path) -> None:
    store = FakeAdminStore()
    with pytest.raises(ImportRefusedError, match="no valid recipient"):
        await create_job_from_file(store, request(csv_file(tmp_path, 0, bad_lines=[2, 3])))
    assert store.jobs == {}


async def test_a_bad_header_creates_no_job(tmp_path: Path) -> None:
    store = FakeAdminStore()
    path = tmp_path / "r.csv"
    path.write_text("address\nx@example.com\n")
    with pytest.raises(RecipientsFileError):
        await create_job_from_file(store, request(path))
    assert store.jobs == {}


async def test_a_failure_midway_cancels_the_job(tmp_path: Path) -> None:
    store = FakeAdminStore(fail_on_batch=2)
    with pytest.raises(ImportAbortedError) as caught:
        await create_job_from_file(store, request(csv_file(tmp_path, 2_500)))
    message = str(caught.value)
    assert message == (
        "import stopped after 1,000 emails: ConnectionResetError: connection lost; "
        "job 1 was cancelled, nothing of it will be sent"
    )
    assert "a@example.com" not in message  # driver parameters are personal data
    assert store.jobs[1].status == JobStatus.CANCELLED


async def test_a_file_error_midway_cancels_the_job(tmp_path: Path) -> None:
    path = csv_file(tmp_path, 1_500)
    with path.open("ab") as stream:
        stream.write(b"j\xf6rg@example.com,N\n")  # Latin-1, not UTF-8
    store = FakeAdminStore()
    with pytest.raises(ImportAbortedError, match="line 1502 is not UTF-8 text"):
        await create_job_from_file(store, request(path))
    assert store.jobs[1].status == JobStatus.CANCELLED


async def test_an_interruption_midway_cancels_the_job(tmp_path: Path) -> None:
    # Ctrl-C: asyncio.Runner cancels the main task, which lands in the import.
    store = FakeAdminStore(fail_on_batch=3, failure=asyncio.CancelledError())
    with pytest.raises(ImportAbortedError, match="after 2,000 emails: interrupted; job 1 was"):
        await create_job_from_file(store, request(csv_file(tmp_path, 2_500)))
    assert store.jobs[1].status == JobStatus.CANCELLED
