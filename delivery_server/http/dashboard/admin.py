"""The suppression list and the audit log pages (paged by number and by id: no address
in any URL)."""

from __future__ import annotations

from aiohttp import web

from delivery_server.http.api.models import MAX_ID
from delivery_server.http.dashboard.console import Console, View
from delivery_server.models import SuppressionReason

SUPPRESSIONS_PAGE = 100
AUDIT_PAGE = 100
MAX_PAGE = 100_000


def _number(view: View, name: str, largest: int) -> int | None:
    text = view.request.query.get(name, "")
    if text.isascii() and text.isdigit() and len(text) < 20 and 1 <= int(text) <= largest:
        return int(text)
    return None


class AdminPages:
    def __init__(self, console: Console) -> None:
        self._console = console

    async def suppressions(self, view: View) -> web.StreamResponse:
        page = _number(view, "page", MAX_PAGE) or 1
        entries = await self._console.store.suppressions(
            SUPPRESSIONS_PAGE + 1, (page - 1) * SUPPRESSIONS_PAGE
        )
        return self._console.render(
            "suppressions.html",
            view,
            entries=entries[:SUPPRESSIONS_PAGE],
            page=page,
            more=len(entries) > SUPPRESSIONS_PAGE,
            reasons=list(SuppressionReason),
        )

    async def audit(self, view: View) -> web.StreamResponse:
        before = _number(view, "before", MAX_ID)
        job_id = _number(view, "job", MAX_ID)
        entries = await self._console.store.audit_entries(AUDIT_PAGE + 1, before, job_id)
        more = len(entries) > AUDIT_PAGE
        entries = entries[:AUDIT_PAGE]
        job_query = f"&job={job_id}" if job_id is not None else ""
        return self._console.render(
            "audit.html",
            view,
            entries=entries,
            job_id=job_id,
            older=f"?before={entries[-1].id}{job_query}" if more else None,
        )


def admin_routes(console: Console) -> list[web.RouteDef]:
    pages = AdminPages(console)
    return [
        web.get("/suppressions", console.page(pages.suppressions)),
        web.get("/audit", console.page(pages.audit)),
    ]
