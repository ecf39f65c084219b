"""The console's pages and actions, through real HTTP on MariaDB: the actions and their
audit trail, a read token's limits, the search, the CSV downloads, the suppression list,
and escaping of what came from outside."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from delivery_server.models import EmailStatus, JobStatus, NewEmail
from tests.integration.harness import STATEMENT, create_job, wait_for_job
from tests.support.console_rig import Browser, Console, browser, console_settings, recipients
from tests.support.console_rig import running_console as console_running

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def console(mariadb_url: str, tmp_path: Path) -> AsyncIterator[Console]:
    settings = console_settings(mariadb_url, tmp_path, max_send_rate=2.0)
    async with console_running(settings) as running:
        yield running


@pytest.fixture
async def operator(console: Console) -> AsyncIterator[Browser]:
    async with browser(console.port) as b:
        assert (await b.login(console.operate_token))[0] == 303
        yield b


async def act(b: Browser, job_id: int, action: str, **fields: str) -> str:
    """Post an action as its page's form does; return the page it leads back to."""
    csrf = await b.csrf(f"/jobs/{job_id}")
    status, page, response = await b.post(f"/jobs/{job_id}/{action}", {"csrf": csrf, **fields})
    assert status == 303, page[:1000]
    assert response.headers["Location"] == f"/jobs/{job_id}"
    status, page, _ = await b.get(f"/jobs/{job_id}")
    assert status == 200
    return page


async def test_actions_change_the_job_and_are_audited_like_the_apis(
    console: Console, operator: Browser
) -> None:
    job = await create_job(console.store, recipients(200, failing=3))
    page = await act(operator, job.id, "pause")
    assert f"Job {job.id}: paused." in page
    assert (await console.store.job(job.id)).status is JobStatus.PAUSED
    page = await act(operator, job.id, "pause")
    assert "already paused" in page
    page = await act(operator, job.id, "resume")
    assert (await console.store.job(job.id)).status is JobStatus.PROCESSING

    # Cancel asks first: the first post shows a confirmation and changes nothing.
    csrf = await operator.csrf(f"/jobs/{job.id}")
    status, page, _ = await operator.post(f"/jobs/{job.id}/cancel", {"csrf": csrf})
    assert status == 200
    assert 'name="confirmed" value="yes"' in page
    assert "cannot be resumed" in page
    assert (await console.store.job(job.id)).status is JobStatus.PROCESSING
    page = await act(operator, job.id, "cancel", confirmed="yes")
    assert "emails cancelled" in page
    assert (await console.store.job(job.id)).status is JobStatus.CANCELLED
    # A second cancel is refused with the reason, and audited as refused.
    page = await act(operator, job.id, "cancel", confirmed="yes")
    assert "Not done" in page
    assert "already cancelled" in page

    entries = await console.store.audit_entries(20, job_id=job.id)
    seen = [(e.action, e.outcome) for e in reversed(entries)]
    assert seen == [
        ("job.pause", "ok"),
        ("job.pause", "ok"),
        ("job.resume", "ok"),
        ("job.cancel", "ok"),
        ("job.cancel", "conflict"),
    ]
    assert {(e.actor, e.client) for e in entries} == {("ops-alice", "127.0.0.1")}
    # ... and the audit page shows them, the login too.
    status, page, _ = await operator.get(f"/audit?job={job.id}")
    assert status == 200
    assert page.count("job.cancel") == 2
    assert "ops-alice" in page
    assert "127.0.0.1" in page
    assert "console.login" in (await operator.get("/audit"))[1]


async def test_restart_failed_after_confirmation(console: Console, operator: Browser) -> None:
    job = await create_job(console.store, recipients(4, failing=2))
    job = await wait_for_job(console.store, job.id, timeout=30)
    assert job.status is JobStatus.FAILED
    csrf = await operator.csrf(f"/jobs/{job.id}")
    status, page, _ = await operator.post(f"/jobs/{job.id}/restart-failed", {"csrf": csrf})
    assert status == 200
    assert "2 failed or unknown emails can be sent again" in page
    assert 'name="include_unknown"' in page
    assert 'name="transient_only"' in page
    # Their failure (a template variable missing) is permanent: transient_only leaves them.
    page = await act(operator, job.id, "restart-failed", confirmed="yes", transient_only="yes")
    assert "0 failed (transient only) emails restarted" in page
    page = await act(operator, job.id, "restart-failed", confirmed="yes")
    assert "2 failed emails restarted" in page
    [entry] = await console.store.audit_entries(1, job_id=job.id)
    assert (entry.action, entry.outcome, entry.detail) == (
        "job.restart-failed",
        "ok",
        "2 failed emails restarted",
    )


async def test_a_read_token_sees_the_buttons_disabled_and_is_refused(console: Console) -> None:
    job = await create_job(console.store, recipients(100))
    async with browser(console.port) as viewer:
        assert (await viewer.login(console.read_token))[0] == 303
        status, page, _ = await viewer.get(f"/jobs/{job.id}")
        assert status == 200
        assert "the actions need an <em>operate</em> token" in page
        for action in ("pause", "resume", "cancel", "restart-failed"):
            button = page[page.index(f'value="{action}"') :].split(">", 1)[0]
            assert "disabled" in button, action
        csrf = await viewer.csrf(f"/jobs/{job.id}")
        for action in ("pause", "cancel", "restart-failed"):
            status, page, _ = await viewer.post(
                f"/jobs/{job.id}/{action}", {"csrf": csrf, "confirmed": "yes"}
            )
            assert status == 403, action
            assert "needs an operate token" in page
        status, _, _ = await viewer.post(
            "/suppressions/add", {"csrf": csrf, "addresses": "someone@example.com"}
        )
        assert status == 403
    assert (await console.store.job(job.id)).status is JobStatus.PROCESSING
    assert await console.store.suppressions(10) == []
    entries = await console.store.audit_entries(10)
    assert [(e.actor, e.action, e.outcome) for e in reversed(entries)] == [
        ("viewer-bob", "console.login", "ok"),
        ("viewer-bob", "job.pause", "forbidden"),
        ("viewer-bob", "job.cancel", "forbidden"),
        ("viewer-bob", "job.restart-failed", "forbidden"),
        ("viewer-bob", "suppressions.add", "forbidden"),
    ]


async def test_search_posts_the_address_and_finds_by_prefix(
    console: Console, operator: Browser
) -> None:
    emails = [*recipients(30), NewEmail("Under_Score%1@customers.example", {})]
    job = await create_job(console.store, emails)
    csrf = await operator.csrf(f"/jobs/{job.id}")
    status, page, response = await operator.post(
        f"/jobs/{job.id}/search", {"csrf": csrf, "address": "C2"}
    )
    assert status == 200
    assert "c2@" not in str(response.url)
    found = {line for line in page.splitlines() if "@customers.example</td>" in line}
    assert len(found) == 1 + 10  # c2, c20..c29
    assert "11 emails found" in page
    # LIKE's wildcards and SQL's quotes are only characters of an address here.
    for typed, hits in (("%", 0), ("_", 0), ("under_score%", 1), ("' OR 1=1 --", 0)):
        status, page, _ = await operator.post(
            f"/jobs/{job.id}/search", {"csrf": csrf, "address": typed}
        )
        assert status == 200, typed
        assert f"{hits} email{'' if hits == 1 else 's'} found" in page, typed
    status, page, _ = await operator.post(
        f"/jobs/{job.id}/search", {"csrf": csrf, "address": "x" * 400}
    )
    assert (status, "0 emails found" in page) == (200, True)


async def test_csv_downloads_per_status(console: Console, operator: Browser) -> None:
    job = await create_job(console.store, recipients(6, failing=2))
    await wait_for_job(console.store, job.id, timeout=30)
    status, body, response = await operator.get(f"/jobs/{job.id}/emails.csv?status=failed")
    assert status == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    assert f"job-{job.id}-emails-failed.csv" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(body)))
    assert sorted(r["to_address"] for r in rows) == ["c1@customers.example", "c2@customers.example"]
    assert {r["status"] for r in rows} == {"failed"}
    status, body, _ = await operator.get(f"/jobs/{job.id}/emails.csv")
    assert len(list(csv.DictReader(io.StringIO(body)))) == 6
    for bad in ("?status=nonsense", "?status=failed&extra=1", "?delivery_status=sent"):
        status, page, _ = await operator.get(f"/jobs/{job.id}/emails.csv{bad}")
        assert status == 400, bad
        assert "status=" in page
    # The job page links every status it has emails in.
    page = (await operator.get(f"/jobs/{job.id}"))[1]
    assert f'href="/jobs/{job.id}/emails.csv?status=failed"' in page
    assert f'href="/jobs/{job.id}/emails.csv?status=sent"' in page
    counts = (await console.store.job_summary(job.id)).counts
    assert counts[EmailStatus.SENT] == 4


async def test_suppression_list_add_and_remove(console: Console, operator: Browser) -> None:
    csrf = await operator.csrf("/suppressions")
    status, _, response = await operator.post(
        "/suppressions/add",
        {"csrf": csrf, "addresses": "gone@example.com\n\nAlso@Example.com\n", "note": "ticket 7"},
    )
    assert (status, response.headers["Location"]) == (303, "/suppressions")
    page = (await operator.get("/suppressions"))[1]
    assert "2 of 2 addresses added (manual)" in page
    assert "gone@example.com" in page
    assert "ticket 7" in page
    status, _, _ = await operator.post(
        "/suppressions/remove", {"csrf": csrf, "address": "gone@example.com"}
    )
    assert status == 303
    page = (await operator.get("/suppressions"))[1]
    assert "1 of 1 addresses removed" in page
    assert "gone@example.com" not in page
    assert [s.address for s in await console.store.suppressions(10)] == ["also@example.com"]
    # A bad address is named by its position, nothing is added.
    await operator.post("/suppressions/add", {"csrf": csrf, "addresses": "ok@example.com\nnope"})
    page = (await operator.get("/suppressions"))[1]
    assert "Not done: address 2" in page
    assert len(await console.store.suppressions(10)) == 1
    actions = [(e.action, e.outcome) for e in reversed(await console.store.audit_entries(10))]
    assert actions[1:] == [
        ("suppressions.add", "ok"),
        ("suppressions.remove", "ok"),
        ("suppressions.add", "invalid"),
    ]


async def test_what_came_from_outside_is_escaped(console: Console, operator: Browser) -> None:
    await console.store.add_template(STATEMENT)
    job = await console.store.create_job(
        "<script>alert(1)</script>", "statement", "statements@bank.example"
    )
    await console.store.add_emails(job.id, [NewEmail('"><img src=x>@customers.example', {})])
    for path in ("/", f"/jobs/{job.id}"):
        page = (await operator.get(path))[1]
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    csrf = await operator.csrf(f"/jobs/{job.id}")
    page = (await operator.post(f"/jobs/{job.id}/search", {"csrf": csrf, "address": '"><'}))[1]
    assert "<img src=x>" not in page
    assert "&#34;&gt;&lt;img src=x&gt;@customers.example" in page
