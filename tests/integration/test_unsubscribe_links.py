"""One-click unsubscribe links (RFC 8058) from ``jobs create --unsubscribe`` to the POST.

An embedded server (SQLite, the in-process queue, the outbox) with the API listener on:
the ``.eml`` files it writes are read as a mail client would, and the link in
``List-Unsubscribe`` is POSTed to the listener.
"""

from __future__ import annotations

import email
import email.policy
import json
import secrets
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from delivery_server.cli import main
from delivery_server.models import EmailStatus, JobStatus, SuppressionReason
from delivery_server.ports import Store
from delivery_server.settings import Settings, load_settings
from tests.integration.harness import (
    FROM_ADDRESS,
    STATEMENT,
    RunningServer,
    customer,
    prepared_store,
    wait_for_job,
)

pytestmark = pytest.mark.timeout(60)

SECRET = secrets.token_urlsafe(32)
PUBLIC_URL = "https://mail.bank.example/delivery"


def embedded(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'delivery.db'}",
        "outbox_dir": tmp_path / "outbox",
        "http_port": 0,
        "api_port": 0,
        "public_url": PUBLIC_URL,
        "unsubscribe_secret": SECRET,
        "poll_interval": 0.05,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with prepared_store(embedded(tmp_path)) as store:
        await store.add_template(STATEMENT)
        yield store


async def start_job(store: Store, first: int, *, unsubscribe: bool) -> int:
    job = await store.create_job("test", STATEMENT.name, FROM_ADDRESS, unsubscribe=unsubscribe)
    await store.add_emails(job.id, [customer(first), customer(first + 1)])
    await store.set_job_status(job.id, JobStatus.PROCESSING, [JobStatus.DRAFT])
    return job.id


def written(outbox: Path, job_id: int) -> list[email.message.EmailMessage]:
    messages = []
    for path in sorted(outbox.glob(f"{job_id}-*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        messages.append(message)
    return messages


async def test_an_opted_in_job_carries_one_click_links_that_suppress_the_address(
    tmp_path: Path, store: Store
) -> None:
    settings = embedded(tmp_path)
    with_links = await start_job(store, 1, unsubscribe=True)
    without = await start_job(store, 3, unsubscribe=False)
    async with RunningServer(settings) as server:
        for job_id in (with_links, without):
            assert (await wait_for_job(store, job_id, timeout=30)).status is JobStatus.COMPLETED

        plain = written(tmp_path / "outbox", without)
        assert len(plain) == 2
        assert all(m["List-Unsubscribe"] is None for m in plain)  # statements go without

        linked = written(tmp_path / "outbox", with_links)
        assert len(linked) == 2
        links = []
        for message in linked:
            assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            header = str(message["List-Unsubscribe"])
            assert header.startswith(f"<{PUBLIC_URL}/unsubscribe/")
            assert header.endswith(">")
            assert "@" not in header  # no address in the link
            links.append(header[1:-1])
        assert links[0] != links[1]  # one token per email

        path = urllib.parse.urlsplit(links[0]).path.removeprefix("/delivery")
        async with (
            aiohttp.ClientSession() as client,
            client.post(
                f"http://127.0.0.1:{server.api_port}{path}",
                data={"List-Unsubscribe": "One-Click"},
            ) as response,
        ):
            assert response.status == 200

        [entry] = await store.suppressions(limit=10)
        assert entry.reason is SuppressionReason.UNSUBSCRIBE
        assert entry.address == "c1@customers.example"  # the first email's address only

        # The next job to that address sends it nothing.
        later = await start_job(store, 1, unsubscribe=False)
        assert (await wait_for_job(store, later, timeout=30)).status is JobStatus.COMPLETED
        summary = await store.job_summary(later)
        assert summary.counts.get(EmailStatus.SUPPRESSED) == 1
        assert summary.counts.get(EmailStatus.SENT) == 1


async def test_a_server_without_links_fails_an_opted_in_jobs_emails_rather_than_send_them(
    tmp_path: Path, store: Store
) -> None:
    settings = embedded(tmp_path, public_url=None, unsubscribe_secret=None, api_port=None)
    job_id = await start_job(store, 1, unsubscribe=True)
    async with RunningServer(settings):
        job = await wait_for_job(store, job_id, timeout=30)
    assert job.status is JobStatus.FAILED
    summary = await store.job_summary(job_id)
    assert summary.counts.get(EmailStatus.FAILED) == 2
    assert any("DELIVERY_PUBLIC_URL" in error for _, error in summary.last_errors)
    assert written(tmp_path / "outbox", job_id) == []


def test_jobs_create_unsubscribe_needs_the_link_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    templates = Path(__file__).resolve().parents[2] / "delivery_server/examples/templates"
    recipients = tmp_path / "recipients.jsonl"
    variables = {"name": "Ann", "account": "DE1", "period": "2026", "balance": "1.00"}
    recipients.write_text(json.dumps({"email": "ann@customers.example", **variables}) + "\n")
    monkeypatch.setenv("DELIVERY_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    for name in ("DELIVERY_PUBLIC_URL", "DELIVERY_UNSUBSCRIBE_SECRET"):
        monkeypatch.delenv(name, raising=False)
    assert main(["db", "upgrade"]) == 0
    assert main(["templates", "push", str(templates)]) == 0
    create = ["jobs", "create", "--template", "statement", "--from", FROM_ADDRESS,
              "--recipients", str(recipients), "--unsubscribe", "--json"]  # fmt: skip

    capsys.readouterr()
    assert main(create) == 2
    err = capsys.readouterr().err
    assert "DELIVERY_PUBLIC_URL and DELIVERY_UNSUBSCRIBE_SECRET" in err

    monkeypatch.setenv("DELIVERY_PUBLIC_URL", PUBLIC_URL)
    monkeypatch.setenv("DELIVERY_UNSUBSCRIBE_SECRET", SECRET)
    assert main(create) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["job"]["unsubscribe"] is True
