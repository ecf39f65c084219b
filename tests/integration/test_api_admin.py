"""Templates, suppressions, the OpenAPI document and bad bodies, through real HTTP on
MariaDB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from delivery_server.http.api import api_endpoints
from delivery_server.renderer import Renderer
from tests.integration.api_rig import api_rig
from tests.integration.harness import STATEMENT

pytestmark = pytest.mark.timeout(90)


async def test_openapi_document_is_valid_and_describes_every_route(
    mariadb_url: str, tmp_path: Path
) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        answer = await rig.get("/api/v1/openapi.json", auth="read")
        assert answer.status == 200
        document = answer.body
        validate(document)  # raises on anything OpenAPI 3.1 does not allow
        described = {
            (method.upper(), path)
            for path, operations in document["paths"].items()
            for method in operations
        }
        routed = {(e.method, e.path) for e in api_endpoints(Renderer(), unsubscribe_ready=False)}
        assert described == routed
        assert len(described) == 17
        for operations in document["paths"].values():
            for operation in operations.values():
                assert "401" in operation["responses"]
        # Both ways in are described: a token, or the console's cookie (with its CSRF).
        schemes = document["components"]["securitySchemes"]
        assert document["security"] == [{"bearer": []}, {"session": []}]
        assert schemes["session"] == {"type": "apiKey", "in": "cookie", "name": "ds_session"}
        assert "X-CSRF-Token" in document["info"]["description"]
        assert (await rig.get("/api/v1/openapi.json", auth=None)).status == 401


async def test_templates_list_and_preview(mariadb_url: str, tmp_path: Path) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        await rig.store.add_template(STATEMENT)
        listed = (await rig.get("/api/v1/templates", auth="read")).body["templates"]
        assert [(t["name"], t["locale"], t["version"], t["has_html"]) for t in listed] == [
            ("statement", "en", 1, True)
        ]
        variables = {"name": "Ada", "account": "DE1", "balance": "1.00", "period": "2026"}
        preview = await rig.post(
            "/api/v1/templates/preview",
            auth="read",
            json={"name": "statement", "variables": variables},
        )
        assert preview.status == 200, preview.body
        assert preview.body["subject"] == "Statement 2026 for Ada"
        assert "<p>Dear Ada</p>" in preview.body["html_body"]

        missing = await rig.post(
            "/api/v1/templates/preview", json={"name": "statement", "variables": {"name": "A"}}
        )
        assert missing.status == 422
        assert "undefined" in missing.body["error"]
        for body, status in (
            ({"name": "nope"}, 404),
            ({"name": "statement", "locale": "de"}, 404),
            ({"name": "statement", "variables": []}, 422),
            ({"variables": {}}, 422),
        ):
            answer = await rig.post("/api/v1/templates/preview", json=body)
            assert answer.status == status, (body, answer.body)


async def test_suppressions_list_add_remove(mariadb_url: str, tmp_path: Path) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        added = await rig.post(
            "/api/v1/suppressions",
            json={"addresses": ["Ann@X.example ", "bob@x.example"], "note": "asked by phone"},
        )
        assert added.status == 200, added.body
        assert added.body == {"changed": 2}
        listed = (await rig.get("/api/v1/suppressions", auth="read")).body["suppressions"]
        assert sorted(e["address"] for e in listed) == ["ann@x.example", "bob@x.example"]
        assert {e["reason"] for e in listed} == {"manual"}
        assert len((await rig.get("/api/v1/suppressions?limit=1")).body["suppressions"]) == 1
        assert (await rig.get("/api/v1/suppressions?limit=0")).status == 422

        bad = await rig.post("/api/v1/suppressions", json={"addresses": ["ok@x.example", "no"]})
        assert bad.status == 422
        assert bad.body["error"].startswith("address 2:")
        assert "no" not in bad.body["error"].removeprefix("address 2:").split()  # not quoted
        past = await rig.post(
            "/api/v1/suppressions",
            json={"addresses": ["c@x.example"], "expires_at": "2001-01-01T00:00:00Z"},
        )
        assert past.status == 422
        assert (await rig.post("/api/v1/suppressions", json={"addresses": []})).status == 422
        assert (
            await rig.post("/api/v1/suppressions", json={"addresses": ["a@x.example"] * 1001})
        ).status == 422

        removed = await rig.post(
            "/api/v1/suppressions/remove", json={"addresses": ["ANN@x.example", "zed@x.example"]}
        )
        assert removed.body == {"changed": 1}
        left = (await rig.get("/api/v1/suppressions")).body["suppressions"]
        assert [e["address"] for e in left] == ["bob@x.example"]
        trail = (await rig.get("/api/v1/audit")).body["entries"]
        assert [(e["action"], e["outcome"]) for e in trail][::-1] == [
            ("suppressions.add", "ok"),
            ("suppressions.add", "invalid"),
            ("suppressions.add", "invalid"),
            ("suppressions.add", "invalid"),
            ("suppressions.add", "invalid"),
            ("suppressions.remove", "ok"),
        ]
        assert "@" not in json.dumps([e["detail"] for e in trail])  # no address in the trail


async def test_bad_bodies_are_clear_4xx_and_the_server_keeps_serving(
    mariadb_url: str, tmp_path: Path
) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        job = await rig.job(1)
        search = f"/api/v1/jobs/{job.id}/emails/search"
        huge = json.dumps({"address": "a", "pad": "x" * 10_000_000})
        too_large = await rig.post(search, data=huge, headers={"Content-Type": "application/json"})
        assert too_large.status == 413
        assert too_large.body["error"]
        for data, content_type, status in (
            ("{not json", "application/json", 422),
            ('{"address": "a"}', "text/plain", 415),
            ("[1, 2]", "application/json", 422),
            ('{"address": 5}', "application/json", 422),
            ("\xff\xfe", "application/json", 422),
        ):
            answer = await rig.post(search, data=data, headers={"Content-Type": content_type})
            assert answer.status == status, (data, answer.body)
            assert answer.body["error"]
        # The error never echoes what was sent.
        leaky = await rig.post(search, json={"address": ["secret-ish@x.example"]})
        assert leaky.status == 422
        assert "secret-ish" not in json.dumps(leaky.body)
        assert (await rig.get(f"/api/v1/jobs/{job.id}")).status == 200
