"""A live progress bar for one job (``jobs watch`` and the demo), fed by ``job_summary``."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from delivery_server.models import TERMINAL_EMAIL_STATUSES, EmailStatus, JobStatus, JobSummary
from delivery_server.ports import AdminStore

POLL_SECONDS = 0.5


class RateColumn(ProgressColumn):
    """Emails per second, from rich's moving estimate."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text(f"{speed:,.0f} emails/s" if speed else "- emails/s", style="cyan")


def done_count(summary: JobSummary) -> int:
    """Emails that reached an end (sent, failed, unknown, ...): what the bar counts."""
    return sum(summary.counts.get(status, 0) for status in TERMINAL_EMAIL_STATUSES)


def _describe(summary: JobSummary) -> str:
    counts = summary.counts
    sent, failed = counts.get(EmailStatus.SENT, 0), counts.get(EmailStatus.FAILED, 0)
    unknown = counts.get(EmailStatus.UNKNOWN, 0)
    extra = f" [yellow]{unknown:,} unknown[/]" if unknown else ""
    return (
        f"job {summary.job.id} [cyan]{summary.job.status}[/] "
        f"[green]{sent:,} sent[/] [red]{failed:,} failed[/]{extra}"
    )


async def follow_job(
    store: AdminStore,
    job_id: int,
    console: Console,
    *,
    interval: float = POLL_SECONDS,
    alongside: asyncio.Task[Any] | None = None,
) -> JobSummary:
    """Show a live bar until the job is no longer processing; return its last summary.

    ``alongside`` is a task the caller runs meanwhile (the demo's server): if it ends
    first, following stops too, so that a crashed server cannot leave the bar waiting.
    """
    summary = await store.job_summary(job_id)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        speed_estimate_period=10,
    ) as progress:
        bar = progress.add_task(
            _describe(summary), total=_total(summary), completed=done_count(summary)
        )
        while summary.job.status == JobStatus.PROCESSING:
            if alongside is None:
                await asyncio.sleep(interval)
            else:
                await asyncio.wait([alongside], timeout=interval)
                if alongside.done():
                    break
            summary = await store.job_summary(job_id)
            progress.update(
                bar,
                description=_describe(summary),
                total=_total(summary),
                completed=done_count(summary),
            )
    return summary


def _total(summary: JobSummary) -> int:
    return max(sum(summary.counts.values()), summary.job.total_count, 1)
