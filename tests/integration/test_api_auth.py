"""The API's authentication through real HTTP on MariaDB: every route refuses a missing,
bad or revoked token (401) and a read token on an action (403, audited), failed attempts
are rate-limited per client, the security headers are on every answer, and the
``tokens`` commands create (printed once, last line), list and revoke."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from delivery_server.api_tokens import TokenScope, mint_token
from delivery_server.http.api.auth import MAX_FAILURES
from tests.integration.api_rig import ApiRig, api_rig, new_token
from tests.support.cli_runner import Cli, Result

pytestmark = pytest.mark.timeout(90)


async def _routes(rig: ApiRig) -> list[tuple[str, str, str]]:
    """(method, path with a real job id, scope) of every route the document describes."""
    job = await rig.job(1)
    document = (await rig.get("/api/v1/openapi.json")).body
    routes = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            scope = "operate" if "operate" in operation.get("description", "") else "read"
            routes.append((method.upper(), path.replace("{job_id}", str(job.id)), scope))
    return routes


def _assert_secured(headers: Any) -> None:
    policy = headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy
    assert "script-src" not in policy  # default-src 'none': no script at all, inline or not
    assert "default-src 'none'" in policy
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_every_route_refuses_a_missing_bad_or_revoked_token(
    mariadb_url: str, tmp_path: Path
) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        routes = await _routes(rig)
        assert len(routes) >= 15
        revoked = await new_token(rig.store, "gone", TokenScope.OPERATE)
        assert await rig.store.revoke_api_token("gone")
        unknown, _ = mint_token()
        refusals: list[str | None] = [
            None,
            f"Bearer {unknown}",
            f"Bearer {revoked}",
            f"Basic {rig.operate}",
            "Bearer ",
            "Bearer " + "x" * 5000,
        ]
        for n, (method, path, _scope) in enumerate(routes, start=10):
            for refusal in refusals:
                # Each route from its own address: the failure limit is per client.
                answer = await rig.call(method, path, auth=refusal, source=f"127.0.0.{n}")
                assert answer.status == 401, (method, path, refusal and refusal[:20])
                assert answer.headers["WWW-Authenticate"].startswith("Bearer")
                _assert_secured(answer.headers)
        # Nothing was done by any of them.
        assert (await rig.get("/api/v1/audit")).body["entries"] == []


async def test_a_read_token_may_look_but_not_act(mariadb_url: str, tmp_path: Path) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        routes = await _routes(rig)
        actions = [(m, p) for m, p, scope in routes if scope == "operate"]
        assert {p.rsplit("/", 1)[-1] for _, p in actions} >= {
            "pause",
            "resume",
            "cancel",
            "restart-failed",
            "jobs",
            "suppressions",
            "remove",
        }
        for method, path in actions:
            answer = await rig.call(method, path, auth="read", json={})
            assert answer.status == 403, (method, path)
            assert "operate" in answer.body["error"]
        for method, path, scope in routes:
            if scope == "read" and method == "GET":
                assert (await rig.get(path, auth="read")).status == 200, path
        entries = (await rig.get("/api/v1/audit", auth="read")).body["entries"]
        assert len(entries) == len(actions)
        assert {e["outcome"] for e in entries} == {"forbidden"}
        assert {e["actor"] for e in entries} == {"viewer"}
        assert {e["client"] for e in entries} == {"127.0.0.1"}


async def test_failed_attempts_are_rate_limited_per_client(
    mariadb_url: str, tmp_path: Path
) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        assert (await rig.get("/api/v1/jobs")).status == 200
        wrong, _ = mint_token()
        for _ in range(MAX_FAILURES):
            assert (await rig.get("/api/v1/jobs", auth=f"Bearer {wrong}")).status == 401
        blocked = await rig.get("/api/v1/jobs", auth=f"Bearer {wrong}")
        assert blocked.status == 429
        assert int(blocked.headers["Retry-After"]) >= 1
        # While blocked, even a good token is refused: a guesser learns nothing.
        assert (await rig.get("/api/v1/jobs")).status == 429
        # The public endpoints are not behind the limit.
        status = (await rig.call("POST", "/ses/events", auth=None, data="{}")).status
        assert status == 400


async def test_security_headers_on_every_kind_of_answer(mariadb_url: str, tmp_path: Path) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        job = await rig.job(2)
        for answer in (
            await rig.get("/api/v1/jobs"),
            await rig.get(f"/api/v1/jobs/{job.id}/emails.csv"),
            await rig.get("/api/v1/no-such-route"),
            await rig.get("/no-such-page", auth=None),
            await rig.call("POST", "/ses/events", auth=None, data="not sns"),
            await rig.get("/api/v1/jobs", auth=None),
        ):
            _assert_secured(answer.headers)
        nowhere = await rig.get("/api/v1/no-such-route")
        assert nowhere.status == 404
        assert nowhere.body == {"error": "Not Found"}


async def test_last_used_at_is_recorded(mariadb_url: str, tmp_path: Path) -> None:
    async with api_rig(mariadb_url, tmp_path) as rig:
        [before] = [t for t in await rig.store.api_tokens() if t.name == "viewer"]
        assert before.last_used_at is None
        assert (await rig.get("/api/v1/jobs", auth="read")).status == 200
        [after] = [t for t in await rig.store.api_tokens() if t.name == "viewer"]
        assert after.last_used_at is not None


async def test_tokens_commands(
    mariadb_url: str, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DELIVERY_DATABASE_URL", mariadb_url)

    async def run(*args: str) -> Result:  # the CLI runs its own event loop: in a thread
        return await asyncio.to_thread(cli, *args)

    async with api_rig(mariadb_url, tmp_path) as rig:
        created = await run("tokens", "create", "--name", "deploy-bot", "--scope", "operate")
        assert created.code == 0, created.err
        secret = created.out.strip().splitlines()[-1]
        assert secret.startswith("dsk_")
        assert " " not in secret
        assert (await rig.post("/api/v1/jobs/1/pause", auth=f"Bearer {secret}")).status == 404

        listed = await run("tokens", "list", "--json")
        assert listed.code == 0, listed.err
        assert secret not in listed.out
        names = {t["name"]: t for t in json.loads(listed.out)}
        assert names["deploy-bot"]["scope"] == "operate"
        assert names["deploy-bot"]["revoked_at"] is None

        assert (await run("tokens", "create", "--name", "deploy-bot")).code == 1  # name taken
        assert (await run("tokens", "create", "--name", "bad name!")).code == 2
        assert (await run("tokens", "create", "--name", "x", "--scope", "admin")).code == 2

        assert (await run("tokens", "revoke", "deploy-bot")).code == 0
        assert (await rig.get("/api/v1/jobs", auth=f"Bearer {secret}")).status == 401
        assert (
            await run("tokens", "revoke", "deploy-bot")
        ).code == 1  # nothing active by that name
        # A revoked token's name may be given to a new token.
        again = await run("tokens", "create", "--name", "deploy-bot")
        assert again.code == 0
        assert again.out.strip().splitlines()[-1] != secret
