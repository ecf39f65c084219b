"""A job's emails through real HTTP on MariaDB: keyset pages and their bounds, filters,
the search by address (SQL and LIKE metacharacters taken literally), and the CSV export
of 100,000 emails streamed in bounded memory.

The export's memory is watched as the process's RSS while it runs (tracemalloc slows
the export twelvefold): the whole CSV is ~26 MB, and 100,000 rows read at once would
cost several times that in Python objects; the export holds one page of 1,000."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import psutil
import pytest

from delivery_server.models import NewEmail
from tests.integration.api_rig import ApiRig, api_rig
from tests.integration.harness import customer

pytestmark = pytest.mark.timeout(120)

EXPORT_EMAILS = 100_000
ERROR_TEXT = "RetryableError: " + "x" * 200  # makes the whole CSV ~30 MB


async def test_pages_filters_and_bounds(mariadb_url: str, tmp_path: Path) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        job = await rig.job(7)
        await rig.sql(
            "UPDATE delivery_email SET status = 'sent', delivery_status = 'bounced'"
            " WHERE job_id = %s AND MOD(id, 2) = 0",
            job.id,
        )
        ids = [r[0] for r in await rig.sql("SELECT id FROM delivery_email ORDER BY id")]
        seen, after = [], 0
        while True:
            page = (await rig.get(f"/api/v1/jobs/{job.id}/emails?limit=3&after={after}")).body
            seen += [e["id"] for e in page["emails"]]
            if page["next_after"] is None:
                break
            after = page["next_after"]
        assert seen == ids

        bounced = (
            await rig.get(f"/api/v1/jobs/{job.id}/emails?delivery_status=bounced", auth="read")
        ).body["emails"]
        assert [e["id"] for e in bounced] == [i for i in ids if i % 2 == 0]
        assert {e["status"] for e in bounced} == {"sent"}
        pending = (await rig.get(f"/api/v1/jobs/{job.id}/emails?status=pending")).body
        assert [e["id"] for e in pending["emails"]] == [i for i in ids if i % 2]
        none = (await rig.get(f"/api/v1/jobs/{job.id}/emails?status=failed")).body
        assert none == {"emails": [], "next_after": None}

        for bad in (
            "limit=0",
            "limit=1001",
            "limit=-5",
            "after=-1",
            "after=abc",
            "after=99999999999999999999",
            "status=sent%27%20OR%201=1",
            "delivery_status=lost",
            "address=c1",  # no addresses in URLs: the search is a POST
        ):
            answer = await rig.get(f"/api/v1/jobs/{job.id}/emails?{bad}")
            assert answer.status == 422, bad
        assert (await rig.get(f"/api/v1/jobs/{job.id}/emails?limit=1000")).status == 200
        assert (await rig.get("/api/v1/jobs/777777/emails")).status == 404


async def test_search_by_address_takes_metacharacters_literally(
    mariadb_url: str, tmp_path: Path
) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        job = await rig.job(0)
        addresses = [
            "o'brien@x.example",
            "100%real@x.example",
            "under_score@x.example",
            "underXscore@x.example",
            "Mixed.Case@x.example",
        ]
        await rig.store.add_emails(job.id, [NewEmail(a, {"name": "n"}) for a in addresses])

        async def search(text: str, **extra: object) -> list[str]:
            answer = await rig.post(
                f"/api/v1/jobs/{job.id}/emails/search", json={"address": text, **extra}
            )
            assert answer.status == 200, (text, answer.body)
            return [e["to_address"] for e in answer.body["emails"]]

        assert await search("O'BRIEN") == ["o'brien@x.example"]
        assert await search("100%") == ["100%real@x.example"]
        assert await search("under_") == ["under_score@x.example"]
        assert await search("mixed.case@") == ["Mixed.Case@x.example"]
        assert await search("under", limit=1) == ["under_score@x.example"]
        for hostile in ("%", "_", "'; DROP TABLE delivery_email; --", "\\", '" OR ""="', "*"):
            assert await search(hostile) == [], hostile
        assert await search("u", status="sent") == []
        assert (
            await rig.post(f"/api/v1/jobs/{job.id}/emails/search", json={"address": ""})
        ).status == 422
        assert (
            await rig.post(f"/api/v1/jobs/{job.id}/emails/search", json={"address": "a" * 400})
        ).status == 422
        assert (await rig.get(f"/api/v1/jobs/{job.id}/emails")).status == 200  # still serving
        assert len((await rig.get(f"/api/v1/jobs/{job.id}/emails")).body["emails"]) == 5


async def _fill(rig: ApiRig, job_id: int) -> None:
    """100,000 emails in one statement: every tenth failed with a long error."""
    await rig.sql(
        "INSERT INTO delivery_email (job_id, to_address, variables, status, attempts,"
        " last_error, created_at, updated_at)"
        " WITH RECURSIVE seq (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < %s)"
        " SELECT %s, CONCAT('c', n, '@customers.example'), '{}',"
        " IF(MOD(n, 10) = 0, 'failed', 'sent'), 1, %s, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6)"
        " FROM seq",
        EXPORT_EMAILS,
        job_id,
        ERROR_TEXT,
        session="SET SESSION max_recursive_iterations = 1000000",
    )


async def test_csv_export_of_100000_emails_streams_in_bounded_memory(
    mariadb_url: str, tmp_path: Path
) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        job = await rig.job(0)
        await _fill(rig, job.id)
        process = psutil.Process()
        baseline = peak = process.memory_info().rss
        lines, failed, size, tail = 0, 0, 0, b""
        async with rig.client.get(
            rig.url(f"/api/v1/jobs/{job.id}/emails.csv"),
            headers={"Authorization": f"Bearer {rig.read}"},
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/csv")
            assert "attachment" in response.headers["Content-Disposition"]
            async for chunk in response.content.iter_chunked(64 * 1024):
                size += len(chunk)
                complete, _, tail = (tail + chunk).rpartition(b"\n")
                lines += complete.count(b"\n") + 1 if complete else 0
                failed += complete.count(b",failed,")
                peak = max(peak, process.memory_info().rss)
        # Server and client share this process: the growth bounds them both.
        growth = peak - baseline
        assert tail == b""
        lines -= 1  # the header
        assert lines == EXPORT_EMAILS
        assert failed == EXPORT_EMAILS // 10
        assert size > 25_000_000  # what holding the export in memory would have cost
        assert growth < 20_000_000, f"the process grew by {growth / 1e6:.1f} MB exporting"

        only_failed = await rig.get(f"/api/v1/jobs/{job.id}/emails.csv?status=failed")
        rows = list(csv.reader(io.StringIO(only_failed.body)))
        assert len(rows) == EXPORT_EMAILS // 10 + 1
        assert {row[2] for row in rows[1:]} == {"failed"}
        assert rows[1][6] == ERROR_TEXT


async def test_csv_cells_cannot_become_formulas(mariadb_url: str, tmp_path: Path) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        job = await rig.job(0)
        await rig.store.add_emails(job.id, [customer(1), NewEmail("=cmd@x.example", {})])
        await rig.sql(
            "UPDATE delivery_email SET last_error = '=HYPERLINK(\"http://x\")' WHERE job_id = %s",
            job.id,
        )
        text = (await rig.get(f"/api/v1/jobs/{job.id}/emails.csv")).body
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[2][1] == "'=cmd@x.example"
        assert {row[6] for row in rows[1:]} == {'\'=HYPERLINK("http://x")'}
