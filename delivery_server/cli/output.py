"""How the command line shows jobs: rich tables for people, JSON for scripts.

Nothing here prints a recipient's address, variables or body: job summaries carry email
ids and errors, and errors are scrubbed of anything that looks like an address.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from delivery_server.job_import import ImportReport, ProgressFn
from delivery_server.models import DeliveryStatus, EmailStatus, Job, JobStatus, JobSummary, utcnow

STATUS_STYLES = {
    JobStatus.DRAFT: "blue",
    JobStatus.PROCESSING: "cyan",
    JobStatus.PAUSED: "yellow",
    JobStatus.COMPLETED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "dim",
}
# Error classes listed by ``jobs show`` (all of them are in --json output).
SHOWN_ERROR_GROUPS = 20
# Provider errors sometimes quote the recipient ("550 <ann@example.com>: no such user").
_ADDRESS = re.compile(r"<?[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+>?")


def redact(error: str) -> str:
    """An error message without email addresses in it."""
    return _ADDRESS.sub("<address>", error)


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def _time(value: datetime | None) -> str | None:
    # Stored as naive UTC; say so for scripts.
    return value.isoformat() + "Z" if value is not None else None


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "status": str(job.status),
        "template": job.template_name,
        "from_address": job.from_address,
        "reply_to": job.reply_to,
        "scheduled_at": _time(job.scheduled_at),
        "created_at": _time(job.created_at),
        "started_at": _time(job.started_at),
        "finished_at": _time(job.finished_at),
        "total_count": job.total_count,
        "sent_count": job.sent_count,
        "failed_count": job.failed_count,
        "paused_reason": job.paused_reason,
        "unsubscribe": job.unsubscribe,
        "template_version": job.template_version,
        "send_by": _time(job.send_by),
        "channel": job.channel,
        "target": job.target,
        "max_segments": job.max_segments,
    }


def all_counts(summary: JobSummary) -> dict[str, int]:
    """Every email status, zeros included, in the order of their life."""
    return {str(status): summary.counts.get(status, 0) for status in EmailStatus}


def delivery_counts(summary: JobSummary) -> dict[str, int]:
    """Every delivery status (what the recipients' side reported), zeros included."""
    return {str(status): summary.delivery_counts.get(status, 0) for status in DeliveryStatus}


def summary_json(summary: JobSummary) -> dict[str, Any]:
    return {
        "job": job_json(summary.job),
        "counts": all_counts(summary),
        "delivery_counts": delivery_counts(summary),
        "last_errors": [
            {"email_id": email_id, "error": redact(error)}
            for email_id, error in summary.last_errors
        ],
        "failures_by_error": [
            {
                "error": group.error_class,
                "count": group.count,
                "example_email_id": group.example_email_id,
            }
            for group in summary.error_groups
        ],
    }


def import_json(report: ImportReport) -> dict[str, Any]:
    assert report.job is not None
    return {
        "job": job_json(report.job),
        "imported": report.imported,
        "invalid_count": report.invalid_count,
        "invalid": [{"line": row.line, "reason": row.reason} for row in report.invalid],
    }


def import_line(report: ImportReport) -> str:
    assert report.job is not None
    job = report.job
    skipped = (
        f", {plural(report.invalid_count, 'invalid row')} skipped" if report.invalid_count else ""
    )
    when = f", not before {job.scheduled_at:%Y-%m-%d %H:%M:%S} UTC" if job.scheduled_at else ""
    if job.send_by:
        when += f", not after {job.send_by:%Y-%m-%d %H:%M:%S} UTC"
    return (
        f"job {job.id} ({job.name}): {plural(report.imported, 'email')} imported{skipped}; "
        f"status {job.status}{when}"
    )


def _status(status: JobStatus) -> Text:
    return Text(str(status), style=STATUS_STYLES.get(status, ""))


def jobs_table(jobs: list[Job]) -> Table:
    table = Table(
        title="jobs" if jobs else "jobs: none yet",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("name", overflow="fold", min_width=12, max_width=40)
    table.add_column("status", no_wrap=True)
    # Only when some job is not an email job: an 80-column listing keeps its names whole.
    channels = any(job.channel != "email" for job in jobs)
    if channels:
        table.add_column("channel", no_wrap=True)
    for column in ("sent", "failed", "total"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    for job in jobs:
        cells: list[str | Text] = [str(job.id), Text(job.name), _status(job.status)]
        if channels:
            cells.append(job.channel)
        table.add_row(
            *cells,
            f"{job.sent_count:,}",
            f"{job.failed_count:,}",
            f"{job.total_count:,}",
            f"{job.created_at:%Y-%m-%d %H:%M}" if job.created_at else "",
        )
    return table


def print_summary(console: Console, summary: JobSummary) -> None:
    """``jobs show``: the job, its emails by status, the last errors."""
    job = summary.job
    about = Table.grid(padding=(0, 2))
    about.add_column(style="bold")
    about.add_column()
    about.add_row("job", Text(f"{job.id}  {job.name}"))
    about.add_row("status", _status(job.status))
    # The counts below are of this channel's sends (sms sent, files dropped, POSTs).
    cap = f" (at most {job.max_segments} segments per SMS)" if job.max_segments else ""
    about.add_row("channel", Text(job.channel + (f" → {job.target}" if job.target else "") + cap))
    pinned = f" (version {job.template_version})" if job.template_version else ""
    about.add_row("template", Text(job.template_name + pinned))
    about.add_row("from", Text(job.from_address))
    if job.reply_to:
        about.add_row("reply to", Text(job.reply_to))
    if job.paused_reason:
        about.add_row("paused by", Text(job.paused_reason))
    for label, value in (
        ("scheduled", job.scheduled_at),
        ("created", job.created_at),
        ("started", job.started_at),
        ("finished", job.finished_at),
    ):
        if value is not None:
            about.add_row(label, f"{value:%Y-%m-%d %H:%M:%S} UTC")
    if job.send_by is not None:
        expired = summary.counts.get(EmailStatus.EXPIRED, 0)
        about.add_row("send by", f"{job.send_by:%Y-%m-%d %H:%M:%S} UTC ({expired:,} expired)")
    console.print(about)
    console.print(_counts_table("emails", "status", all_counts(summary)))
    if any(summary.delivery_counts.values()):
        after = delivery_counts(summary)
        console.print(_counts_table("after the send", "delivery status", after))
    if summary.error_groups:
        console.print(_error_groups_table(summary))


def _error_groups_table(summary: JobSummary) -> Table:
    """Failed, unknown, suppressed and expired emails by error class, largest first."""
    errors = Table(title="failures by error", title_justify="left", box=box.SIMPLE_HEAD)
    errors.add_column("emails", justify="right")
    errors.add_column("error")
    errors.add_column("e.g. email", justify="right")
    for group in summary.error_groups[:SHOWN_ERROR_GROUPS]:
        errors.add_row(f"{group.count:,}", Text(group.error_class), str(group.example_email_id))
    hidden = summary.error_groups[SHOWN_ERROR_GROUPS:]
    if hidden:
        rest = sum(group.count for group in hidden)
        errors.add_row(f"{rest:,}", Text(f"... {plural(len(hidden), 'more error')} (--json)"), "")
    return errors


def _counts_table(title: str, column: str, counts: dict[str, int]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column(column)
    table.add_column("count", justify="right")
    for status, count in counts.items():
        table.add_row(status, f"{count:,}", style="" if count else "dim")
    return table


def summary_line(summary: JobSummary) -> str:
    """One line: what became of a job, how long it took and how fast it went."""
    job, counts = summary.job, all_counts(summary)
    # Expired emails are named only when there are some: most jobs have no deadline.
    expired = f", {counts['expired']:,} expired" if counts["expired"] else ""
    line = (
        f"job {job.id} {job.status}: {counts['sent']:,} sent, {counts['failed']:,} failed, "
        f"{counts['unknown']:,} unknown{expired} of {sum(counts.values()):,}"
    )
    if job.started_at is not None:
        seconds = ((job.finished_at or utcnow()) - job.started_at).total_seconds()
        if seconds > 0:
            line += f" in {format_duration(seconds)} ({counts['sent'] / seconds:,.1f} emails/s)"
    return line


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


@contextmanager
def import_progress(console: Console) -> Iterator[ProgressFn | None]:
    """A live count of imported rows on a terminal; nothing when output is redirected."""
    if not console.is_terminal:
        yield None
        return
    started = time.monotonic()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("reading recipients")

        def update(imported: int, invalid: int) -> None:
            rate = imported / max(time.monotonic() - started, 1e-6)
            bad = f", {invalid:,} invalid" if invalid else ""
            progress.update(task, description=f"{imported:,} imported{bad} ({rate:,.0f}/s)")

        yield update
