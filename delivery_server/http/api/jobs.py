"""``/api/v1/jobs``: the list, one job with its counts and progress, and the actions.

The actions are the CLI's (``jobs pause|resume|cancel|restart-failed``) with the same
rules: each state change is one conditional update, so of two operators acting on one
job at once, one wins and the other is told what the job became (409). Pausing or
resuming a job that already is so is not an error (``changed: false``).
"""

from __future__ import annotations

from delivery_server.api_tokens import TokenScope
from delivery_server.errors import ConflictError
from delivery_server.http.api.endpoints import Call, Endpoint
from delivery_server.http.api.models import (
    JobAction,
    JobDetail,
    JobList,
    JobOut,
    JobsQuery,
    LastError,
    Progress,
    RestartRequest,
)
from delivery_server.http.api.rates import JobRates, eta_seconds
from delivery_server.models import ACTIVE_EMAIL_STATUSES, Job, JobStatus

FINISHED = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


def _job_id(call: Call) -> int:
    assert call.job_id is not None  # the path has one: see Endpoint.has_job_id
    return call.job_id


async def list_jobs(call: Call) -> JobList:
    query: JobsQuery = call.query
    statuses = [query.status] if query.status is not None else None
    jobs = await call.store.job_page(statuses, query.limit + 1, query.before)
    more = len(jobs) > query.limit
    jobs = jobs[: query.limit]
    return JobList(jobs=[JobOut.of(job) for job in jobs], next_before=jobs[-1].id if more else None)


def job_detail(rates: JobRates) -> Endpoint:
    async def show(call: Call) -> JobDetail:
        summary = await call.store.job_summary(_job_id(call))
        remaining = sum(n for s, n in summary.counts.items() if s in ACTIVE_EMAIL_STATUSES)
        done = sum(summary.counts.values()) - remaining
        job = summary.job
        rate, basis = rates.rate(job.id, job.status, done, job.started_at)
        return JobDetail(
            job=JobOut.of(job),
            counts=summary.counts,
            delivery_counts=summary.delivery_counts,
            last_errors=[LastError(email_id=i, error=e) for i, e in summary.last_errors],
            progress=Progress(
                done=done,
                remaining=remaining,
                rate_per_second=rate,
                rate_basis=basis,
                eta_seconds=eta_seconds(remaining, rate) if rate is not None else None,
            ),
        )

    return Endpoint(
        "GET",
        "/api/v1/jobs/{job_id}",
        show,
        "One job: counts by status and by delivery status, last errors, rate and ETA",
        JobDetail,
    )


async def pause(call: Call) -> JobAction:
    job_id = _job_id(call)
    paused = await call.store.pause_job(job_id, f"paused by {call.principal.name} (API)")
    job = await call.store.job(job_id)
    if not paused and job.status is not JobStatus.PAUSED:
        raise ConflictError(f"job {job_id} is {job.status}: only a processing job can be paused")
    call.detail = "paused" if paused else "already paused"
    return JobAction(job=JobOut.of(job), changed=paused)


async def resume(call: Call) -> JobAction:
    job_id = _job_id(call)
    job = await call.store.job(job_id)
    if job.status is JobStatus.PROCESSING:
        call.detail = "already processing"
        return JobAction(job=JobOut.of(job), changed=False)
    sources = [JobStatus.PAUSED, JobStatus.DRAFT]
    if job.status not in sources:
        raise ConflictError(f"job {job_id} is {job.status}: only a paused or draft job resumes")
    try:
        job = await call.store.set_job_status(job_id, JobStatus.PROCESSING, expected=sources)
    except ConflictError:
        now = await call.store.job(job_id)  # someone else changed it in between
        raise ConflictError(f"job {job_id} became {now.status}; it was not resumed") from None
    call.detail = "resumed"
    return JobAction(job=JobOut.of(job), changed=True)


async def cancel(call: Call) -> JobAction:
    job_id = _job_id(call)
    job = await call.store.job(job_id)
    if job.status in FINISHED:
        raise ConflictError(f"job {job_id} is already {job.status}: nothing to cancel")
    cancelled = await call.store.cancel_job(job_id)
    call.detail = f"{cancelled} emails cancelled"
    return JobAction(job=JobOut.of(await call.store.job(job_id)), changed=True, emails=cancelled)


async def restart_failed(call: Call) -> JobAction:
    job_id = _job_id(call)
    body: RestartRequest = call.body
    await call.store.job(job_id)  # a NotFoundError for a job that does not exist
    restarted = await call.store.restart_failed(
        [job_id], include_unknown=body.include_unknown, transient_only=body.transient_only
    )
    kinds = "failed and unknown" if body.include_unknown else "failed"
    if body.transient_only:
        kinds += " (transient only)"
    call.detail = f"{restarted} {kinds} emails restarted"
    job: Job = await call.store.job(job_id)
    return JobAction(job=JobOut.of(job), changed=restarted > 0, emails=restarted)


def job_endpoints(rates: JobRates) -> list[Endpoint]:
    """The jobs endpoints (the upload is in ``upload``)."""
    act = TokenScope.OPERATE
    actions = [
        ("pause", pause, "Pause a processing job", None),
        ("resume", resume, "Resume a paused job, or start a draft", None),
        ("cancel", cancel, "Cancel a job and its unsent emails", None),
        ("restart-failed", restart_failed, "Send a job's failed emails again", RestartRequest),
    ]
    return [
        Endpoint("GET", "/api/v1/jobs", list_jobs, "Jobs, newest first", JobList, query=JobsQuery),
        job_detail(rates),
        *(
            Endpoint(
                "POST",
                f"/api/v1/jobs/{{job_id}}/{name}",
                handler,
                summary,
                JobAction,
                scope=act,
                body=body,
                action=f"job.{name}",
                errors=(404, 409, 422),
            )
            for name, handler, summary, body in actions
        ),
    ]
