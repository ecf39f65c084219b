"""Job creation from an uploaded recipients file through real HTTP on MariaDB: a CSV and a
JSONL import as the CLI's do; broken rows, a wrong form or an oversized upload store
nothing and answer a clear 4xx; the server keeps serving."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from delivery_server.http.api.upload import MAX_UPLOAD_BYTES
from tests.integration.api_rig import Answer, ApiRig, api_rig
from tests.integration.harness import STATEMENT, wait_for_job

pytestmark = pytest.mark.timeout(90)

GOOD_CSV = (
    "email,name,account,balance,period\n"
    "ann@customers.example,Ann,DE1,1.00,2026\n"
    "bob@customers.example,Bob,DE2,2.00,2026\n"
)
BROKEN_CSV = GOOD_CSV + "not-an-address,Eve,DE3,3.00,2026\n" + '"unterminated,x\n'


async def _upload(
    rig: ApiRig, content: str | bytes, *, filename: str = "customers.csv", **fields: Any
) -> Answer:
    form = aiohttp.FormData()
    values = {"template": "statement", "from_address": "Bank <s@bank.example>", **fields}
    for name, value in values.items():
        form.add_field(name, str(value))
    form.add_field("recipients", content, filename=filename, content_type="text/csv")
    return await rig.post("/api/v1/jobs", data=form)


async def _jobs(rig: ApiRig) -> int:
    return int((await rig.sql("SELECT COUNT(*) FROM delivery_job"))[0][0])


async def test_a_csv_upload_creates_and_starts_a_job(mariadb_url: str, tmp_path: Path) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        await rig.store.add_template(STATEMENT)
        created = await _upload(rig, GOOD_CSV)
        assert created.status == 201, created.body
        job = created.body["job"]
        assert created.body["imported"] == 2
        assert created.body["invalid_count"] == 0
        assert job["name"] == "statement customers.csv"
        assert job["status"] == "processing"
        assert (await wait_for_job(rig.store, job["id"], timeout=30)).status == "completed"
        [entry] = (await rig.get("/api/v1/audit")).body["entries"]
        assert (entry["action"], entry["outcome"], entry["job_id"]) == (
            "job.create",
            "ok",
            job["id"],
        )

        rows = "\n".join(
            json.dumps(
                {
                    "email": f"j{n}@customers.example",
                    "name": "J",
                    "account": "A",
                    "balance": "0",
                    "period": "2026",
                }
            )
            for n in range(3)
        )
        jsonl = await _upload(rig, rows, filename="list.jsonl", draft="true", name="by hand")
        assert jsonl.status == 201, jsonl.body
        assert jsonl.body["job"]["status"] == "draft"
        assert jsonl.body["job"]["name"] == "by hand"
        assert jsonl.body["imported"] == 3


async def test_broken_rows_store_nothing(mariadb_url: str, tmp_path: Path) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        await rig.store.add_template(STATEMENT)
        refused = await _upload(rig, BROKEN_CSV)
        assert refused.status == 422, refused.body
        assert refused.body["invalid_count"] == 2
        assert [r["line"] for r in refused.body["invalid"]] == [4, 5]
        # It names the upload, not our temporary copy of it.
        assert refused.body["error"].startswith("the uploaded file: ")
        assert "delivery-upload-" not in refused.body["error"]
        assert await _jobs(rig) == 0
        assert (await rig.sql("SELECT COUNT(*) FROM delivery_email"))[0][0] == 0

        lenient = await _upload(rig, BROKEN_CSV, strict="false", draft="true")
        assert lenient.status == 201
        assert lenient.body["imported"] == 2
        assert lenient.body["invalid_count"] == 2
        assert (await rig.get("/api/v1/audit")).body["entries"][1]["outcome"] == "invalid"


async def test_bad_forms_and_files_are_clear_4xx(mariadb_url: str, tmp_path: Path) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        await rig.store.add_template(STATEMENT)
        cases: list[tuple[Any, dict[str, Any], int, str]] = [
            (GOOD_CSV, {"filename": "../../etc/passwd"}, 422, ".csv"),
            (GOOD_CSV, {"filename": "customers.exe"}, 422, ".csv"),
            (GOOD_CSV, {"template": "nope"}, 422, "does not exist"),
            (GOOD_CSV, {"from_address": "not an address"}, 422, "from_address"),
            (GOOD_CSV, {"colour": "red"}, 422, "colour"),
            (GOOD_CSV, {"scheduled_at": "tomorrow"}, 422, "scheduled_at"),
            (GOOD_CSV, {"unsubscribe": "true"}, 422, "DELIVERY_PUBLIC_URL"),
            ("name\nAnn\n", {}, 422, "email"),
            (b"email\n\xff\xfe\n", {}, 422, "UTF-8"),
            ("", {}, 422, "empty"),
            ("email\n", {}, 422, "no valid recipient"),
        ]
        for content, fields, status, words in cases:
            answer = await _upload(rig, content, **fields)
            assert answer.status == status, (fields, answer.body)
            assert words in answer.body["error"], (fields, answer.body)
        no_file = aiohttp.FormData(default_to_multipart=True)
        no_file.add_field("template", "statement")
        no_file.add_field("from_address", "s@bank.example")
        assert (await rig.post("/api/v1/jobs", data=no_file)).status == 422
        not_multipart = await rig.post("/api/v1/jobs", json={"template": "statement"})
        assert not_multipart.status == 415
        assert await _jobs(rig) == 0


async def test_an_oversized_upload_is_refused_before_it_is_read(
    mariadb_url: str, tmp_path: Path
) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        reader, writer = await asyncio.open_connection("127.0.0.1", rig.server.api_port)
        head = (
            "POST /api/v1/jobs HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\n"
            f"Authorization: Bearer {rig.operate}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {MAX_UPLOAD_BYTES + 1}\r\n\r\n"
        )
        writer.write(head.encode() + b"--x\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        writer.close()
        assert status_line.split()[1] == b"413"
        assert await _jobs(rig) == 0
        assert (await rig.get("/api/v1/jobs")).status == 200
