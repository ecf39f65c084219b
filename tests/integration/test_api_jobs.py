"""The jobs routes through real HTTP on MariaDB: the list and its pages, one job's counts
and progress, the actions and their audit entries, concurrent actions on one job, and
garbage in every job id."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from delivery_server.models import EmailStatus, JobStatus
from tests.integration.api_rig import api_rig

pytestmark = pytest.mark.timeout(90)

JOB_ROUTES = [
    ("GET", "/api/v1/jobs/{}"),
    ("GET", "/api/v1/jobs/{}/emails"),
    ("GET", "/api/v1/jobs/{}/emails.csv"),
    ("POST", "/api/v1/jobs/{}/emails/search"),
    ("POST", "/api/v1/jobs/{}/pause"),
    ("POST", "/api/v1/jobs/{}/resume"),
    ("POST", "/api/v1/jobs/{}/cancel"),
    ("POST", "/api/v1/jobs/{}/restart-failed"),
]
GARBAGE_IDS = [
    "abc",
    "-1",
    "0",
    "1.5",
    "1e3",
    "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "..%252F..",
    "1%20OR%201=1",
    "1;DROP%20TABLE%20delivery_job",
    "99999999999999999999",
    "9223372036854775808",
    "%00",
    "١٢",  # Arabic-Indic digits: "digits" to str.isdigit, not to us
]


async def test_jobs_list_filters_and_pages(mariadb_url: str, tmp_path: Path) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        drafts = [await rig.job(1) for _ in range(5)]
        paused = await rig.job(1, status=JobStatus.PAUSED)
        everything = (await rig.get("/api/v1/jobs")).body
        assert [j["id"] for j in everything["jobs"]] == [paused.id, *[d.id for d in drafts[::-1]]]
        assert everything["next_before"] is None

        only = (await rig.get("/api/v1/jobs?status=paused", auth="read")).body
        assert [j["id"] for j in only["jobs"]] == [paused.id]

        seen, before = [], ""
        while True:
            page = (await rig.get(f"/api/v1/jobs?status=draft&limit=2{before}")).body
            seen += [j["id"] for j in page["jobs"]]
            if page["next_before"] is None:
                break
            before = f"&before={page['next_before']}"
        assert seen == [d.id for d in drafts[::-1]]

        for bad in ("limit=0", "limit=501", "limit=x", "status=nope", "before=0", "colour=red"):
            answer = await rig.get(f"/api/v1/jobs?{bad}")
            assert answer.status == 422, bad
            assert answer.body["error"]
        assert (await rig.get("/api/v1/jobs?limit=500")).status == 200


async def test_job_detail_counts_and_progress(mariadb_url: str, tmp_path: Path) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        job = await rig.job(4)
        await rig.sql(
            "UPDATE delivery_email SET status = 'sent', delivery_status = 'delivered'"
            " WHERE job_id = %s AND id IN (SELECT id FROM (SELECT MIN(id) AS id"
            " FROM delivery_email WHERE job_id = %s) AS first)",
            job.id,
            job.id,
        )
        await rig.sql(
            "UPDATE delivery_email SET status = 'failed', last_error = 'PermanentError: no'"
            " WHERE job_id = %s AND status = 'pending' LIMIT 1",
            job.id,
        )
        detail = (await rig.get(f"/api/v1/jobs/{job.id}", auth="read")).body
        assert detail["job"]["id"] == job.id
        assert detail["counts"]["sent"] == 1
        assert detail["counts"]["failed"] == 1
        assert detail["counts"]["pending"] == 2
        assert detail["delivery_counts"]["delivered"] == 1
        assert detail["last_errors"][0]["error"] == "PermanentError: no"
        assert detail["progress"]["done"] == 2
        assert detail["progress"]["remaining"] == 2
        assert detail["progress"]["rate_per_second"] is None  # a draft is not moving
        assert (await rig.get("/api/v1/jobs/999999")).status == 404


async def test_actions_and_their_audit_trail(mariadb_url: str, tmp_path: Path) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        job = await rig.job(3, status=JobStatus.PAUSED)
        resumed = await rig.post(f"/api/v1/jobs/{job.id}/resume")
        assert resumed.status == 200
        assert resumed.body["job"]["status"] == "processing"
        paused = await rig.post(f"/api/v1/jobs/{job.id}/pause")
        assert paused.status == 200
        assert paused.body["changed"] is True
        assert "ops" in paused.body["job"]["paused_reason"]
        again = await rig.post(f"/api/v1/jobs/{job.id}/pause")
        assert again.body["changed"] is False  # already paused: not an error

        await rig.sql(
            "UPDATE delivery_email SET status = 'failed', attempts = 3 WHERE job_id = %s", job.id
        )
        await rig.sql(
            "UPDATE delivery_email SET failure_kind = 'permanent' WHERE job_id = %s LIMIT 1",
            job.id,
        )
        transient = await rig.post(
            f"/api/v1/jobs/{job.id}/restart-failed", json={"transient_only": True}
        )
        assert transient.status == 200, transient.body
        assert transient.body["emails"] == 2  # the permanent failure stays failed
        await rig.sql(
            "UPDATE delivery_email SET status = 'failed', attempts = 3 WHERE job_id = %s", job.id
        )
        restarted = await rig.post(
            f"/api/v1/jobs/{job.id}/restart-failed", json={"include_unknown": True}
        )
        assert restarted.status == 200, restarted.body
        assert restarted.body["emails"] == 3
        assert (await rig.sql("SELECT COUNT(*) FROM delivery_email WHERE status = 'pending'"))[0][
            0
        ] == 3
        bad_body = await rig.post(
            f"/api/v1/jobs/{job.id}/restart-failed", json={"include_unknwn": True}
        )
        assert bad_body.status == 422

        cancelled = await rig.post(f"/api/v1/jobs/{job.id}/cancel")
        assert cancelled.status == 200
        assert cancelled.body["emails"] == 3
        refused = await rig.post(f"/api/v1/jobs/{job.id}/resume")
        assert refused.status == 409
        assert "cancelled" in refused.body["error"]
        assert (await rig.post(f"/api/v1/jobs/{job.id}/cancel")).status == 409
        assert (await rig.post("/api/v1/jobs/424242/pause")).status == 404

        trail = (await rig.get(f"/api/v1/audit?job_id={job.id}", auth="read")).body["entries"]
        assert [(e["action"], e["outcome"]) for e in trail][::-1] == [
            ("job.resume", "ok"),
            ("job.pause", "ok"),
            ("job.pause", "ok"),
            ("job.restart-failed", "ok"),
            ("job.restart-failed", "ok"),
            ("job.restart-failed", "invalid"),
            ("job.cancel", "ok"),
            ("job.resume", "conflict"),
            ("job.cancel", "conflict"),
        ]
        assert {(e["actor"], e["client"], e["job_id"]) for e in trail} == {
            ("ops", "127.0.0.1", job.id)
        }
        assert trail[2]["detail"] == "3 emails cancelled"
        first = (await rig.get("/api/v1/audit?limit=2")).body
        assert len(first["entries"]) == 2
        rest = (await rig.get(f"/api/v1/audit?before={first['next_before']}&limit=1000")).body
        assert len(rest["entries"]) == 8  # the 404 pause of job 424242 too
        assert rest["next_before"] is None


async def test_concurrent_actions_on_one_job(mariadb_url: str, tmp_path: Path) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        job = await rig.job(50, status=JobStatus.PAUSED)
        actions = ["resume", "pause"] * 10
        answers = await asyncio.gather(
            *(rig.post(f"/api/v1/jobs/{job.id}/{action}") for action in actions)
        )
        assert {a.status for a in answers} <= {200, 409}
        final = (await rig.get(f"/api/v1/jobs/{job.id}")).body["job"]["status"]
        assert final in ("paused", "processing")
        # Cancelled by many at once: every unsent email is cancelled exactly once.
        await rig.post(f"/api/v1/jobs/{job.id}/pause")
        cancels = await asyncio.gather(
            *(rig.post(f"/api/v1/jobs/{job.id}/cancel") for _ in range(8))
        )
        assert {a.status for a in cancels} <= {200, 409}
        done = [a for a in cancels if a.status == 200]
        assert done
        unsent = 50 - (await rig.store.job_summary(job.id)).counts[EmailStatus.SENT]
        assert sum(a.body["emails"] for a in done) == unsent
        assert (await rig.store.job(job.id)).status is JobStatus.CANCELLED
        trail = (await rig.get(f"/api/v1/audit?job_id={job.id}&limit=1000")).body["entries"]
        assert len(trail) == len(actions) + 1 + len(cancels)
        assert (await rig.get("/api/v1/jobs")).status == 200


async def test_garbage_in_every_job_id_is_a_clear_4xx(mariadb_url: str, tmp_path: Path) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        job = await rig.job(1)
        for method, route in JOB_ROUTES:
            for garbage in GARBAGE_IDS:
                answer = await rig.call(method, route.format(garbage), json={"address": "a"})
                assert answer.status in (404, 422), (method, route, garbage, answer.status)
                assert isinstance(answer.body, dict), (route, garbage)
                assert answer.body["error"]
        # Still serving, and nothing was done to the job.
        assert (await rig.get(f"/api/v1/jobs/{job.id}")).body["job"]["status"] == "draft"
        # The refused actions are audited, against no job.
        trail = (await rig.get("/api/v1/audit?limit=1000")).body["entries"]
        assert len(trail) == 4 * len(GARBAGE_IDS)
        assert {e["job_id"] for e in trail} == {None}
        assert {e["outcome"] for e in trail} <= {"invalid", "not_found"}
