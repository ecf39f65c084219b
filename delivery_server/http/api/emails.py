"""A job's emails: keyset pages, a search by address, and the streamed CSV export.

The export pages through the store ``EXPORT_PAGE`` rows at a time and writes each page
before reading the next: memory stays flat whatever the job's size, and a slow client
holds one page, not the job. Cells that a spreadsheet would take for a formula (``=``,
``+``, ``-``, ``@`` first) are prefixed with ``'``: addresses and errors come from outside.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime

from aiohttp import web

from delivery_server.email_listing import EmailFilter, EmailRow
from delivery_server.http.api.endpoints import Call, Endpoint
from delivery_server.http.api.models import (
    EmailOut,
    EmailPage,
    EmailSearch,
    EmailsQuery,
    ExportQuery,
)

EXPORT_PAGE = 1000
CSV_COLUMNS = (
    "id",
    "to_address",
    "status",
    "attempts",
    "delivery_status",
    "delivery_detail",
    "last_error",
    "provider_message_id",
    "sent_at",
    "delivery_updated_at",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _job_id(call: Call) -> int:
    assert call.job_id is not None
    return call.job_id


async def _page(call: Call, query: EmailsQuery, selected: EmailFilter) -> EmailPage:
    job_id = _job_id(call)
    await call.store.job(job_id)  # 404 for a job that does not exist (not an empty page)
    rows = await call.store.email_page(job_id, selected, query.limit + 1, query.after)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return EmailPage(
        emails=[EmailOut.of(row) for row in rows], next_after=rows[-1].id if more else None
    )


async def list_emails(call: Call) -> EmailPage:
    query: EmailsQuery = call.query
    return await _page(call, query, EmailFilter(query.status, query.delivery_status))


async def search_emails(call: Call) -> EmailPage:
    body: EmailSearch = call.body
    selected = EmailFilter(body.status, body.delivery_status, address_prefix=body.address)
    return await _page(call, body, selected)


async def export_csv(call: Call) -> web.StreamResponse:
    job_id = _job_id(call)
    query: ExportQuery = call.query
    await call.store.job(job_id)
    selected = EmailFilter(query.status, query.delivery_status)
    which = f"-{query.status}" if query.status else ""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="job-{job_id}-emails{which}.csv"',
            "Cache-Control": "no-store",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(call.request)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    after = 0
    while True:
        rows = await call.store.email_page(job_id, selected, EXPORT_PAGE, after)
        for row in rows:
            writer.writerow(_cells(row))
        await response.write(buffer.getvalue().encode())
        buffer.seek(0)
        buffer.truncate()
        if len(rows) < EXPORT_PAGE:
            break
        after = rows[-1].id
    await response.write_eof()
    return response


def _cells(row: EmailRow) -> list[str]:
    values: list[object] = [
        row.id,
        row.to_address,
        row.status.value,
        row.attempts,
        row.delivery_status.value if row.delivery_status else "",
        row.delivery_detail,
        row.last_error,
        row.provider_message_id,
        _time(row.sent_at),
        _time(row.delivery_updated_at),
    ]
    return [_safe_cell("" if value is None else str(value)) for value in values]


def _time(value: datetime | None) -> str:
    return "" if value is None else value.isoformat() + "Z"


def _safe_cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def email_endpoints() -> list[Endpoint]:
    return [
        Endpoint(
            "GET",
            "/api/v1/jobs/{job_id}/emails",
            list_emails,
            "A page of a job's emails, by status and delivery status",
            EmailPage,
            query=EmailsQuery,
        ),
        Endpoint(
            "POST",
            "/api/v1/jobs/{job_id}/emails/search",
            search_emails,
            "A job's emails whose address starts with the given text (POST: no address in URLs)",
            EmailPage,
            body=EmailSearch,
        ),
        Endpoint(
            "GET",
            "/api/v1/jobs/{job_id}/emails.csv",
            export_csv,
            "Every email of a job (or of one status) as CSV, streamed",
            None,
            query=ExportQuery,
            media="text/csv",
        ),
    ]
