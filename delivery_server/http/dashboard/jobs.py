"""The jobs list, a job's page, their polled blocks, the CSV download and the search.

The CSV download and the search run the API's own handlers (``http.api.emails``): the
same streamed export, the same keyset search, only reached with the session instead of
a bearer token. The search is a POST form, so that no address is ever in a URL.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from delivery_server.errors import NotFoundError
from delivery_server.http.api.emails import export_csv, search_emails
from delivery_server.http.api.endpoints import Call
from delivery_server.http.api.models import MAX_ID, EmailSearch, ExportQuery
from delivery_server.http.dashboard.console import JOB_ID_PATTERN, Console, View
from delivery_server.http.dashboard.history import send_chart
from delivery_server.http.dashboard.progress import job_progress, list_progress
from delivery_server.models import DeliveryStatus, EmailStatus

JOBS_PAGE = 25
SEARCH_LIMIT = 100


def _before(view: View) -> int | None:
    """``?before=`` of the jobs list: a job id, or nothing."""
    text = view.request.query.get("before", "")
    if text.isascii() and text.isdigit() and len(text) < 20 and 1 <= int(text) <= MAX_ID:
        return int(text)
    return None


class JobPages:
    """Handlers of the jobs list and the job page."""

    def __init__(self, console: Console) -> None:
        self._console = console

    async def _list(self, view: View) -> dict[str, Any]:
        console = self._console
        before = _before(view)
        jobs = await console.store.job_page(None, JOBS_PAGE + 1, before)
        more = len(jobs) > JOBS_PAGE
        jobs = jobs[:JOBS_PAGE]
        progress = await list_progress(console.store, console.rates, console.history, jobs)
        return {
            "jobs": progress,
            "next_before": jobs[-1].id if more else None,
            "query": f"?before={before}" if before is not None else "",
        }

    async def jobs(self, view: View) -> web.StreamResponse:
        return self._console.render("jobs.html", view, **await self._list(view))

    async def jobs_block(self, view: View) -> web.StreamResponse:
        return self._console.render_block("jobs_block.html", view, **await self._list(view))

    async def _job(self, view: View) -> dict[str, Any] | None:
        console = self._console
        try:
            progress = await job_progress(
                console.store, console.rates, console.history, view.job_id()
            )
        except NotFoundError:
            return None
        return {
            "p": progress,
            "statuses": list(EmailStatus),
            "delivery_statuses": list(DeliveryStatus),
            "chart": send_chart(console.history.per_minute(progress.job.id)),
        }

    async def job(self, view: View, **extra: Any) -> web.StreamResponse:
        context = await self._job(view)
        if context is None:
            return self._no_job(view)
        return self._console.render("job.html", view, **context, **extra)

    async def job_block(self, view: View) -> web.StreamResponse:
        context = await self._job(view)
        if context is None:
            return self._no_job(view)
        return self._console.render_block("job_block.html", view, **context)

    def _no_job(self, view: View) -> web.Response:
        job_id = view.request.match_info["job_id"]
        return self._console.problem(view, 404, "No such job", f"There is no job {job_id}.")

    async def search(self, view: View) -> web.StreamResponse:
        """The job page with the emails whose address starts with what was typed."""
        address = view.field("address").strip()
        try:
            body = EmailSearch(address=address, limit=SEARCH_LIMIT)
        except ValidationError:
            return await self.job(view, address=address, results=[], more=False)
        call = Call(view.request, view.principal, self._console.store, job_id=view.job_id())
        call.body = body
        try:
            page = await search_emails(call)
        except NotFoundError:
            return self._no_job(view)
        return await self.job(
            view, address=address, results=page.emails, more=page.next_after is not None
        )

    async def export(self, view: View) -> web.StreamResponse:
        """The API's streamed CSV of a job's emails, of one status or delivery status."""
        try:
            query = ExportQuery.model_validate(dict(view.request.query))
        except ValidationError:
            return self._console.problem(
                view,
                400,
                "Unknown filter",
                "A CSV download takes status= and delivery_status=, each one of the "
                "statuses shown on the job page.",
            )
        call = Call(view.request, view.principal, self._console.store, query=query)
        call.job_id = view.job_id()
        try:
            return await export_csv(call)
        except NotFoundError:
            return self._no_job(view)


def job_routes(console: Console) -> list[web.RouteDef]:
    pages = JobPages(console)
    job = f"/jobs/{JOB_ID_PATTERN}"
    return [
        web.get("/", console.page(pages.jobs)),
        web.get("/jobs/block", console.page(pages.jobs_block, block=True)),
        web.get(job, console.page(pages.job)),
        web.get(f"{job}/block", console.page(pages.job_block, block=True)),
        web.get(f"{job}/emails.csv", console.page(pages.export)),
        web.post(f"{job}/search", console.page(pages.search)),
    ]
