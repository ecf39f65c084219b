"""A server and the CLI on an old job manager's database (DESIGN §11): ``db upgrade``
with ``DELIVERY_SCHEMA_MAP`` sets our tables beside theirs, upstream inserts a job and its
emails in its own format and starts it the old way, and a server process sends it; their
rows end showing the old job manager's values."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from delivery_server.adapters.store_sql.engine import create_engine
from tests.conftest import wait_for
from tests.support.cli_runner import Cli
from tests.support.legacy_schema import MAP_FILE, create_legacy_tables, eed_job, eed_mail
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.timeout(120)

TEMPLATE = """
name = "notice"
locale = "en"
subject = "Notice for {{ name }}"
text_body = "Dear {{ name }}, your balance is {{ balance }}."
"""


@pytest.fixture
def legacy_env(mariadb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "DELIVERY_DATABASE_URL": mariadb_url,
        "DELIVERY_SCHEMA_MAP": str(MAP_FILE),
        "DELIVERY_QUEUE": "local",
        "DELIVERY_SENDER": "outbox",
        "DELIVERY_OUTBOX_DIR": str(tmp_path / "outbox"),
        "DELIVERY_POLL_INTERVAL": "0.1",
        "DELIVERY_SHUTDOWN_GRACE": "2",
        "DELIVERY_LOG_LEVEL": "warning",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


async def upstream(database_url: str, statements: list[Any]) -> list[Any]:
    """What the old job manager's feeders do: plain statements on their own tables."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            results = [await conn.execute(statement) for statement in statements]
            return [(r.inserted_primary_key or [None])[0] if r.is_insert else None for r in results]
    finally:
        await engine.dispose()


async def their_states(database_url: str) -> tuple[list[str], list[str]]:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            jobs = (await conn.execute(sa.select(eed_job.c.state))).scalars().all()
            mails = (await conn.execute(sa.select(eed_mail.c.state))).scalars().all()
            return list(jobs), list(mails)
    finally:
        await engine.dispose()


def test_a_job_inserted_the_old_way_is_sent_by_a_server(
    mariadb_url: str,
    legacy_env: dict[str, str],
    cli: Cli,
    tmp_path: Path,
    servers: list[ServerProcess],
) -> None:
    asyncio.run(create_legacy_tables(mariadb_url))
    assert cli("db", "upgrade").code == 0
    (tmp_path / "notice.toml").write_text(TEMPLATE)
    assert cli("templates", "push", str(tmp_path / "notice.toml")).code == 0

    (job_id,) = asyncio.run(
        upstream(
            mariadb_url,
            [eed_job.insert().values(state="N", template="notice", sender="bank@example.com")],
        )
    )
    asyncio.run(
        upstream(
            mariadb_url,
            [
                eed_mail.insert().values(
                    job_id=job_id,
                    recipient=f"customer{n}@example.com",
                    params=json.dumps({"name": f"Customer {n}", "balance": n * 10}),
                    state="P",
                )
                for n in range(5)
            ]
            + [eed_job.update().where(eed_job.c.job_id == job_id).values(state="P")],
        )
    )
    server = ServerProcess(legacy_env, tmp_path / "server.log")
    servers.append(server)

    def finished() -> bool:  # their rows, read the way upstream would
        assert server.alive(), (tmp_path / "server.log").read_text()[-3000:]
        return asyncio.run(their_states(mariadb_url)) == (["D"], ["S"] * 5)

    wait_for(finished, timeout=60, what="their rows showing the job done and sent")

    shown = cli("jobs", "show", str(job_id), "--json")
    assert shown.code == 0, shown.err
    assert shown.json()["job"]["status"] == "completed"
    written = sorted((tmp_path / "outbox").rglob("*.eml"))
    messages = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in written
    ]
    assert sorted(str(m["To"]) for m in messages) == [f"customer{n}@example.com" for n in range(5)]
    assert server.stop() == 0


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (('table = "eed_mail"', 'table = "eed_mails"'), "email.table"),
        (('to_address = "recipient"', 'to_address = "rcpt"'), "email.columns.to_address"),
        (('draft = "N"', 'drafted = "N"'), "job.status.drafted"),
        (('sent = "S"', 'sent = "P"'), "email.status.pending"),
    ],
)
def test_a_bad_schema_map_is_refused_naming_the_key(
    mariadb_url: str,
    legacy_env: dict[str, str],
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    edit: tuple[str, str],
    key: str,
) -> None:
    asyncio.run(create_legacy_tables(mariadb_url))
    bad = tmp_path / "map.toml"
    text = MAP_FILE.read_text()
    assert edit[0] in text
    bad.write_text(text.replace(edit[0], edit[1]))
    monkeypatch.setenv("DELIVERY_SCHEMA_MAP", str(bad))
    for command in (["db", "upgrade"], ["jobs", "list"]):
        result = cli(*command)
        assert result.code == 2
        assert f"DELIVERY_SCHEMA_MAP: {key}: " in result.err
        assert len(result.err.strip().splitlines()) == 1
