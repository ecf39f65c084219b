"""Creating a job from a recipients file, the way upstream systems do it (DESIGN §3).

The job is created in ``draft``, its emails are inserted in batches while the file is
read, and only then is it set to ``processing``: a publisher never sees a half-imported
job. Reading happens in a worker thread one batch ahead of the database writes, so a file
of 500,000 rows imports with flat memory and without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from delivery_server.channel_email import EMAIL_RULES
from delivery_server.channels import ChannelRules
from delivery_server.errors import (
    DeliveryError,
    ImportAbortedError,
    ImportRefusedError,
    NotFoundError,
)
from delivery_server.models import Job, JobStatus, NewEmail
from delivery_server.ports import AdminStore
from delivery_server.recipients import Row, read_recipients

BATCH_SIZE = 1_000
# Bad rows are counted without limit but only this many are kept to be shown.
MAX_KEPT_INVALID = 1_000

ProgressFn = Callable[[int, int], None]  # (emails imported, invalid rows) so far


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What ``jobs create`` asks for."""

    template: str
    from_address: str
    recipients: Path
    name: str | None = None
    reply_to: str | None = None
    scheduled_at: datetime | None = None
    draft: bool = False
    strict: bool = False
    unsubscribe: bool = False  # one-click unsubscribe headers (RFC 8058) on its emails
    send_by: datetime | None = None  # emails not sent by then expire
    # Its channel (the recipient column and its check, the target's) and target.
    channel: ChannelRules = EMAIL_RULES
    target: str | None = None
    max_segments: int | None = None  # an sms job's cap; None: the setting's


@dataclass(frozen=True, slots=True)
class InvalidRow:
    line: int
    reason: str


@dataclass(slots=True)
class ImportReport:
    """What happened to a recipients file."""

    job: Job | None = None  # None when nothing was written
    imported: int = 0
    invalid_count: int = 0
    invalid: list[InvalidRow] = field(default_factory=list)  # the first MAX_KEPT_INVALID

    def add_invalid(self, line: int, reason: str) -> None:
        self.invalid_count += 1
        if len(self.invalid) < MAX_KEPT_INVALID:
            self.invalid.append(InvalidRow(line, reason))


async def template_exists(store: AdminStore, name: str) -> bool:
    """Whether a template of that name exists in any locale."""
    return any(template.name == name for template in await store.templates())


async def create_job_from_file(
    store: AdminStore, request: JobRequest, on_progress: ProgressFn | None = None
) -> ImportReport:
    """Create a job and import its recipients; return what was imported and skipped.

    Raises ``TargetRefusedError`` for a target its channel's settings refuse,
    ``NotFoundError`` for an unknown template, ``RecipientsFileError`` for an
    unreadable file, ``ImportRefusedError`` when nothing was written and
    ``ImportAbortedError`` when the import broke off (the job is then cancelled).
    """
    target = request.channel.check_target(request.target)
    if not await template_exists(store, request.template):
        raise NotFoundError(f"template {request.template!r} does not exist")
    path = request.recipients
    if request.strict:
        checked = await asyncio.to_thread(_check_whole_file, path, request.channel)
        if checked.invalid_count:
            raise ImportRefusedError(
                f"{path}: {_rows(checked.invalid_count)} invalid; --strict: nothing imported",
                checked,
            )
    report = ImportReport()
    rows = read_recipients(path, request.channel.recipient_field, request.channel.check_recipient)
    batches = _Batches(rows, report)
    try:
        first = await asyncio.to_thread(batches.next)
        if not first:
            raise ImportRefusedError(f"{path}: no valid recipient; no job created", report)
        report.job = await store.create_job(
            name=request.name or f"{request.template} {path.name}",
            template_name=request.template,
            from_address=request.from_address,
            reply_to=request.reply_to,
            scheduled_at=request.scheduled_at,
            unsubscribe=request.unsubscribe,
            send_by=request.send_by,
            channel=request.channel.name,
            target=target,
            max_segments=request.max_segments,
        )
        await _import(store, report.job.id, first, batches, report, on_progress)
        if not request.draft:
            await store.set_job_status(
                report.job.id, JobStatus.PROCESSING, expected=[JobStatus.DRAFT]
            )
        report.job = await store.job(report.job.id)  # with its counts
    except (Exception, asyncio.CancelledError, KeyboardInterrupt) as exc:
        if report.job is None or isinstance(exc, ImportRefusedError):
            raise
        raise ImportAbortedError(await _abandon(store, report, exc), report) from exc
    finally:
        batches.close()
    return report


async def _import(
    store: AdminStore,
    job_id: int,
    first: list[NewEmail],
    batches: _Batches,
    report: ImportReport,
    on_progress: ProgressFn | None,
) -> None:
    batch = first
    while batch:
        # Read the next batch while this one is written.
        ahead = asyncio.ensure_future(asyncio.to_thread(batches.next))
        try:
            report.imported += await store.add_emails(job_id, batch)
        except BaseException:
            # The reading thread cannot be cancelled: let it finish before giving up.
            with contextlib.suppress(Exception):
                await asyncio.shield(ahead)
            raise
        if on_progress is not None:
            on_progress(report.imported, report.invalid_count)
        batch = await ahead


async def _abandon(store: AdminStore, report: ImportReport, exc: BaseException) -> str:
    """Cancel a half-imported job so that nobody sends it; say what was done."""
    assert report.job is not None
    job_id = report.job.id
    reason = _describe(exc)
    try:
        await store.cancel_job(job_id)
    except Exception as cancel_exc:
        return (
            f"import stopped after {_emails(report.imported)}: {reason}; job {job_id} is "
            f"left in draft (it could not be cancelled: {_describe(cancel_exc)})"
        )
    return (
        f"import stopped after {_emails(report.imported)}: {reason}; job {job_id} was "
        "cancelled, nothing of it will be sent"
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
        return "interrupted"
    if isinstance(exc, DeliveryError):
        return str(exc)
    # Driver messages go on with the SQL and its parameters (personal data): first line only.
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line[:300]}" if first_line else type(exc).__name__


class _Batches:
    """Cuts the row stream into batches of valid emails, noting invalid rows."""

    def __init__(self, rows: Generator[Row, None, None], report: ImportReport) -> None:
        self._rows = rows
        self._report = report

    def next(self) -> list[NewEmail]:
        """The next batch (empty at the end of the file); runs in a worker thread."""
        batch: list[NewEmail] = []
        for line, item in self._rows:
            if isinstance(item, str):
                self._report.add_invalid(line, item)
                continue
            batch.append(item)
            if len(batch) >= BATCH_SIZE:
                break
        return batch

    def close(self) -> None:
        """Close the file now rather than when the generator is collected."""
        # ValueError: a reading thread abandoned by a cancellation is still inside the
        # generator; the file is then closed when the generator is collected.
        with contextlib.suppress(ValueError):
            self._rows.close()


def _check_whole_file(path: Path, channel: ChannelRules) -> ImportReport:
    """First pass of ``--strict``: every row is read, nothing is kept but bad rows."""
    report = ImportReport()
    for line, item in read_recipients(path, channel.recipient_field, channel.check_recipient):
        if isinstance(item, str):
            report.add_invalid(line, item)
    return report


def _rows(count: int) -> str:
    return f"{count:,} row{'s' if count != 1 else ''}"


def _emails(count: int) -> str:
    return f"{count:,} email{'s' if count != 1 else ''}"
