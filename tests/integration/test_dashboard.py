"""The console's gate, through real HTTP on MariaDB: what answers without a session, the
login (and its failures), the session cookie, CSRF, and the headers on every answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from delivery_server.models import JobStatus
from tests.integration.harness import create_job
from tests.support.console_rig import (
    Console,
    browser,
    console_settings,
    csrf_of,
    recipients,
    running_console,
)

pytestmark = pytest.mark.timeout(90)

PAGES = ["/", "/jobs/1", "/suppressions", "/audit", "/jobs/1/emails.csv?status=failed"]
BLOCKS = ["/jobs/block", "/jobs/1/block"]


@pytest.fixture
async def console(mariadb_url: str, tmp_path: Path) -> AsyncIterator[Console]:
    # One email a second: the job stays processing for as long as any test here runs.
    settings = console_settings(mariadb_url, tmp_path, max_send_rate=1.0)
    async with running_console(settings) as running:
        yield running


def check_headers(headers: object) -> None:
    csp = headers["Content-Security-Policy"]  # type: ignore[index]
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "script-src 'self'" in csp or "default-src 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"  # type: ignore[index]


async def test_nothing_answers_without_a_session_but_the_login_and_static_files(
    console: Console,
) -> None:
    job = await create_job(console.store, recipients(20))
    async with browser(console.port) as anonymous:
        for path in PAGES:
            status, _, response = await anonymous.get(path.replace("/1", f"/{job.id}"))
            assert (status, response.headers.get("Location")) == (303, "/login"), path
            check_headers(response.headers)
        for path in BLOCKS:
            status, _, response = await anonymous.get(path.replace("/1", f"/{job.id}"))
            assert status == 401, path
        status, _, response = await anonymous.post(f"/jobs/{job.id}/pause", {"csrf": "x"})
        assert (status, response.headers["Location"]) == (303, "/login")
        assert (await console.store.job(job.id)).status is JobStatus.PROCESSING
        status, page, response = await anonymous.get("/login")
        assert status == 200
        assert 'for="token"' in page  # the field has its label
        check_headers(response.headers)
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        for asset in ("/static/console.css", "/static/console.js", "/static/favicon.svg"):
            status, _, response = await anonymous.get(asset)
            assert status == 200, asset
            check_headers(response.headers)
        for probe in ("/static/../sessions.py", "/static/console.py", "/templates/base.html"):
            assert (await anonymous.get(probe))[0] == 404, probe


async def test_login_sets_a_strict_http_only_session_cookie(console: Console) -> None:
    async with browser(console.port) as b:
        status, _, response = await b.login(console.operate_token)
        assert (status, response.headers["Location"]) == (303, "/")
        [cookie] = [c for c in response.cookies.values() if c.key == "ds_session"]
        assert cookie["httponly"]
        assert cookie["samesite"] == "Strict"
        assert not cookie["secure"]  # plain http on loopback
        status, page, _ = await b.get("/")
        assert status == 200
        assert "ops-alice" in page
        # Already logged in: the login page sends the browser on.
        assert (await b.get("/login"))[0] == 303
    async with browser(console.port) as behind_tls:
        _, page, _ = await behind_tls.get("/login")
        status, _, response = await behind_tls.post(
            "/login",
            {"token": console.operate_token, "csrf": csrf_of(page)},
            headers={"X-Forwarded-Proto": "https"},
        )
        assert status == 303
        assert response.cookies["ds_session"]["secure"]


async def test_login_failures(console: Console) -> None:
    async with browser(console.port) as b:
        status, page, response = await b.login("dsk_not-a-token-of-ours")
        assert status == 401
        assert "not valid" in page
        assert "ds_session" not in response.cookies
        assert (await b.get("/"))[0] == 303

        # No login form behind it (a forged cross-site post): refused before any check.
        async with browser(console.port) as other:
            status, page, _ = await other.post(
                "/login", {"token": console.operate_token, "csrf": "guessed" * 4}
            )
            assert status == 403
            assert (await other.get("/"))[0] == 303

        # A revoked token cannot log in, and ends the sessions it had.
        async with browser(console.port) as before:
            assert (await before.login(console.read_token))[0] == 303
            assert (await before.get("/"))[0] == 200
            assert await console.store.revoke_api_token("viewer-bob")
            assert (await before.get("/"))[0] == 303
            assert (await before.get("/jobs/block"))[0] == 401
        assert (await b.login(console.read_token))[0] == 401


async def test_failed_logins_are_rate_limited_per_client(console: Console) -> None:
    async with browser(console.port) as b:
        for _ in range(10):
            assert (await b.login("dsk_wrong"))[0] == 401
        status, page, response = await b.login(console.operate_token)
        assert status == 429
        assert "Too many failed attempts" in page
        assert int(response.headers["Retry-After"]) > 0
        # The API shares the limit: its bearer check refuses this client too.
        async with b.session.get(
            b.url("/api/v1/jobs"), headers={"Authorization": f"Bearer {console.operate_token}"}
        ) as api:
            assert api.status == 429


async def test_every_form_needs_the_sessions_csrf_token(console: Console) -> None:
    job = await create_job(console.store, recipients(50))
    async with browser(console.port) as b, browser(console.port) as other:
        assert (await b.login(console.operate_token))[0] == 303
        assert (await other.login(console.operate_token))[0] == 303
        page = (await b.get(f"/jobs/{job.id}"))[1]
        assert page.count('name="csrf"') >= 6  # logout, 4 actions, search
        mine, theirs = await b.csrf(f"/jobs/{job.id}"), await other.csrf()
        assert mine != theirs
        for posted in ({}, {"csrf": ""}, {"csrf": theirs}, {"csrf": mine[:-1]}):
            status, page, _ = await b.post(f"/jobs/{job.id}/pause", posted)
            assert status == 403, posted
            assert "Nothing was changed" in page
        status, _, _ = await b.post(f"/jobs/{job.id}/search", {"address": "c1"})
        assert status == 403
        assert (await b.post("/suppressions/add", {"addresses": "x@example.com"}))[0] == 403
        assert (await b.post("/logout", {}))[0] == 403
        assert (await console.store.job(job.id)).status is JobStatus.PROCESSING
        assert await console.store.suppressions(10) == []
        assert (await b.get("/"))[0] == 200  # still logged in

        status, _, response = await b.post("/logout", {"csrf": mine})
        assert (status, response.headers["Location"]) == (303, "/login")
        assert (await b.get("/"))[0] == 303
        # The old token is dead with its session, even replayed by hand.
        assert (await b.post(f"/jobs/{job.id}/pause", {"csrf": mine}))[0] == 303
        assert (await console.store.job(job.id)).status is JobStatus.PROCESSING


async def test_ids_in_paths_are_digits_of_an_existing_job(console: Console) -> None:
    async with browser(console.port) as b:
        await b.login(console.operate_token)
        for path in (
            "/jobs/..%2f..%2fetc%2fpasswd",
            "/jobs/1%20OR%201=1",
            "/jobs/-1",
            "/jobs/0",
            "/jobs/99999999999999999999",
            "/jobs/9223372036854775808",
            "/jobs/424242",
            "/jobs/424242/block",
            "/jobs/424242/emails.csv",
        ):
            assert (await b.get(path))[0] == 404, path
        csrf = await b.csrf()
        assert (await b.post("/jobs/424242/pause", {"csrf": csrf}))[0] == 404
        assert (await b.post("/jobs/424242/search", {"csrf": csrf, "address": "a"}))[0] == 404
        assert (await b.get("/"))[0] == 200  # still serving


async def test_the_api_takes_the_session_with_its_csrf_token(console: Console) -> None:
    job = await create_job(console.store, recipients(50))
    async with browser(console.port) as b:
        # Without a session, the API is as closed as ever.
        async with b.session.get(b.url("/api/v1/jobs")) as api:
            assert api.status == 401
        await b.login(console.operate_token)
        async with b.session.get(b.url(f"/api/v1/jobs/{job.id}")) as api:
            assert api.status == 200
            assert (await api.json())["job"]["id"] == job.id
        page = (await b.get("/"))[1]
        token = page.split('<meta name="csrf-token" content="', 1)[1].split('"', 1)[0]
        pause = b.url(f"/api/v1/jobs/{job.id}/pause")
        for headers in ({}, {"X-CSRF-Token": "forged"}):
            async with b.session.post(pause, headers=headers) as api:
                assert api.status == 403, headers
                assert "CSRF" in (await api.json())["error"]
        assert (await console.store.job(job.id)).status is JobStatus.PROCESSING
        async with b.session.post(pause, headers={"X-CSRF-Token": token}) as api:
            assert api.status == 200
        assert (await console.store.job(job.id)).status is JobStatus.PAUSED
        [entry] = await console.store.audit_entries(1, job_id=job.id)
        assert (entry.actor, entry.action, entry.outcome) == ("ops-alice", "job.pause", "ok")
    async with browser(console.port) as viewer:
        await viewer.login(console.read_token)
        token = (await viewer.get("/"))[1].split('name="csrf-token" content="')[1].split('"')[0]
        resume = viewer.url(f"/api/v1/jobs/{job.id}/resume")
        async with viewer.session.post(resume, headers={"X-CSRF-Token": token}) as api:
            assert api.status == 403  # a read token's session is a read token
    assert (await console.store.job(job.id)).status is JobStatus.PAUSED
