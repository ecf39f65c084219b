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
        return Text(f"{speed:,.0f}/s" if speed else "-/s", style="cyan")


def done_count(summary: JobSummary) -> int:
    """Emails that reached an end (sent, failed, unknown, ...): what the bar counts."""
    return sum(summary.counts.get(status, 0) for status in TERMINAL_EMAIL_STATUSES)


def _problems(summary: JobSummary) -> str:
    """Failed and unknown emails, only when there are any (the bar stays short)."""
    counts = summary.counts
    failed, unknown = counts.get(EmailStatus.FAILED, 0), counts.get(EmailStatus.UNKNOWN, 0)
    parts = [f"[red]{failed:,} failed[/]"] if failed else []
    if unknown:
        parts.append(f"[yellow]{unknown:,} unknown[/]")
    return " ".join(parts)


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
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[problems]}"),
        console=console,
        speed_estimate_period=10,
    ) as progress:
        bar = progress.add_task(
            f"job {job_id}",
            total=_total(summary),
            completed=done_count(summary),
            problems=_problems(summary),
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
                total=_total(summary),
                completed=done_count(summary),
                problems=_problems(summary),
            )
    return summary


def _total(summary: JobSummary) -> int:
    return max(sum(summary.counts.values()), summary.job.total_count, 1)
