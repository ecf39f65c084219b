"""The API listener through ``serve()``: ``POST /ses/events`` and one-click unsubscribe.

A whole embedded server runs (SQLite, the in-process queue, SMTP to a local sink) with
``DELIVERY_API_PORT=0``. A local SNS host serves the certificate whose key signs the test's
SNS messages; ``DELIVERY_SNS_CERT_ORIGIN`` lets the server fetch it there instead of from
``sns.<region>.amazonaws.com`` (the TLS side of that fetch is covered by
``test_ses_events_http.py``, with a verifier of its own). What the server did is read back
from the database itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from delivery_server.cli import main
from delivery_server.errors import ConfigError
from delivery_server.models import DeliveryStatus, EmailStatus, JobStatus
from delivery_server.ports import Store
from delivery_server.settings import load_settings
from delivery_server.suppression import sign_unsubscribe
from tests.integration.harness import (
    RunningServer,
    create_job,
    customer,
    prepared_store,
    wait_for_job,
)
from tests.support.ses_events import complaint_event, delivery_event
from tests.support.smtp_sink import SinkHandler, smtp_sink
from tests.support.sns_host import SnsCertHost, sns_cert_host
from tests.support.sns_messages import TOPIC_ARN, confirmation, notification
from tests.support.tls import SigningIdentity, rsa_signing_identity

pytestmark = pytest.mark.timeout(90)

SECRET = secrets.token_urlsafe(32)
ONE_CLICK = {"List-Unsubscribe": "One-Click"}  # RFC 8058's body, form-encoded
OTHER_TOPIC = "arn:aws:sns:us-west-2:123456789012:SomeoneElse"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def identity() -> SigningIdentity:
    return rsa_signing_identity()


@dataclass
class Rig:
    """A running server, what it sends to, the SNS host it trusts, and its database."""

    server: RunningServer
    store: Store
    sns: SnsCertHost
    sink: SinkHandler
    database: Path
    client: aiohttp.ClientSession

    def url(self, path: str, *, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.server.api_port}{path}"

    async def post_event(self, document: dict[str, str]) -> tuple[int, str]:
        # SNS posts its JSON as text/plain.
        headers = {"Content-Type": "text/plain; charset=UTF-8"}
        async with self.client.post(
            self.url("/ses/events"), data=json.dumps(document), headers=headers
        ) as response:
            return response.status, await response.text()

    def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        with contextlib.closing(sqlite3.connect(self.database)) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute(sql, params)]

    def emails(self, job_id: int) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM delivery_email WHERE job_id = ? ORDER BY id", job_id)

    def suppressions(self) -> list[dict[str, Any]]:
        return self.rows("SELECT address, reason FROM delivery_suppression ORDER BY address")

    def event_count(self) -> int:
        return int(self.rows("SELECT COUNT(*) AS n FROM delivery_event")[0]["n"])

    async def sent_email(self, n: int = 1) -> dict[str, Any]:
        """Run a job of one email to customer ``n``; its row once the job completed."""
        job = await create_job(self.store, [customer(n)])
        assert (await wait_for_job(self.store, job.id, timeout=30)).status is JobStatus.COMPLETED
        [row] = self.emails(job.id)
        assert row["status"] == EmailStatus.SENT
        return row

    def delivery(self, row: dict[str, Any], *, topic_arn: str = TOPIC_ARN) -> dict[str, str]:
        """An unsigned SNS notification of SES's ``Delivery`` event for the email ``row``."""
        event = delivery_event(
            row["provider_message_id"] or "not-sent-yet",
            email_id=row["id"],
            job_id=row["job_id"],
            recipient=row["to_address"],
            sent_at=utc_now().replace(tzinfo=None),
        )
        return notification(
            at=utc_now(), message=json.dumps(event), topic_arn=topic_arn, cert_url=self.sns.cert_url
        )


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path,
    identity: SigningIdentity,
    *,
    unsubscribe_secret: str | None = SECRET,
    sink: SinkHandler | None = None,
) -> AsyncIterator[Rig]:
    handler = sink or SinkHandler()
    database = tmp_path / "delivery.db"
    with smtp_sink(handler) as smtp:
        async with sns_cert_host(identity) as sns:
            values: dict[str, Any] = {
                "database_url": f"sqlite:///{database}",
                "sender": "smtp",
                "smtp_url": f"smtp://127.0.0.1:{smtp.port}",
                "http_port": 0,
                "api_port": 0,
                "sns_topic_arns": TOPIC_ARN,
                "sns_cert_origin": sns.origin,
                "poll_interval": 0.1,
                "shutdown_grace": 2.0,
                "log_level": "warning",
            }
            if unsubscribe_secret is not None:
                values["unsubscribe_secret"] = unsubscribe_secret
            settings = load_settings(**values)
            async with (
                prepared_store(settings) as store,
                RunningServer(settings) as server,
                aiohttp.ClientSession() as client,
            ):
                yield Rig(server, store, sns, handler, database, client)


@pytest.fixture
async def rig(tmp_path: Path, identity: SigningIdentity) -> AsyncIterator[Rig]:
    async with running(tmp_path, identity) as started:
        yield started


# -- POST /ses/events -------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_signed_delivery_event_marks_the_sent_email_delivered(
    rig: Rig, version: str
) -> None:
    row = await rig.sent_email()
    assert row["delivery_status"] is None
    assert await rig.post_event(rig.sns.signed(rig.delivery(row), version)) == (200, "accepted")
    [after] = rig.emails(row["job_id"])
    assert after["delivery_status"] == DeliveryStatus.DELIVERED
    assert after["delivery_detail"] == "250 2.6.0"
    summary = await rig.store.job_summary(row["job_id"])
    assert {s: n for s, n in summary.delivery_counts.items() if n} == {DeliveryStatus.DELIVERED: 1}
    assert rig.event_count() == 1
    assert rig.sns.cert_gets == 1


async def test_a_forged_event_is_refused_and_changes_nothing(rig: Rig) -> None:
    row = await rig.sent_email()
    signed = rig.sns.signed(rig.delivery(row))
    complaint = complaint_event(
        row["provider_message_id"],
        email_id=row["id"],
        job_id=row["job_id"],
        recipient=row["to_address"],
    )
    forged = {**signed, "Message": json.dumps(complaint)}
    assert await rig.post_event(forged) == (403, "forged")
    [after] = rig.emails(row["job_id"])
    assert after["delivery_status"] is None
    assert (rig.event_count(), rig.suppressions()) == (0, [])


async def test_an_unsigned_message_or_another_topic_is_refused_unfetched(rig: Rig) -> None:
    row = await rig.sent_email()
    assert await rig.post_event(rig.delivery(row)) == (403, "forged")
    other = rig.sns.signed(rig.delivery(row, topic_arn=OTHER_TOPIC))
    assert await rig.post_event(other) == (403, "refused_topic")
    assert rig.sns.requests == 0
    assert rig.emails(row["job_id"])[0]["delivery_status"] is None
    assert rig.event_count() == 0
    metrics = await _text(rig, rig.url("/metrics", port=rig.server.http_port))
    assert 'delivery_event_outcomes_total{outcome="forged"} 1.0' in metrics
    assert 'delivery_event_outcomes_total{outcome="refused_topic"} 1.0' in metrics


async def test_a_subscription_confirmation_is_confirmed_at_the_sns_host(rig: Rig) -> None:
    message = confirmation(
        at=utc_now(), cert_url=rig.sns.cert_url, subscribe_base=rig.sns.subscribe_base
    )
    assert await rig.post_event(rig.sns.signed(message, "1")) == (200, "confirmed")
    assert rig.sns.confirmations == [
        {"Action": "ConfirmSubscription", "TopicArn": TOPIC_ARN, "Token": message["Token"]}
    ]
    assert rig.event_count() == 0


async def test_an_event_ahead_of_its_send_record_asks_sns_to_deliver_it_again(
    tmp_path: Path, identity: SigningIdentity
) -> None:
    held = SinkHandler(hold_rcpt=True)  # the SMTP server stalls: the email stays sending
    try:
        async with running(tmp_path, identity, sink=held) as rig:
            job = await create_job(rig.store, [customer(1)])
            assert await asyncio.to_thread(held.rcpt_reached.wait, 30)
            [row] = rig.emails(job.id)
            assert row["status"] == EmailStatus.SENDING
            early = rig.sns.signed(rig.delivery(row))
            assert await rig.post_event(early) == (503, "unavailable")
            assert rig.event_count() == 0
            held.release_rcpt.set()
            assert (await wait_for_job(rig.store, job.id, timeout=30)).status is (
                JobStatus.COMPLETED
            )
            # SNS delivers the very same message again; now it has its email.
            assert await rig.post_event(early) == (200, "accepted")
            assert rig.emails(job.id)[0]["delivery_status"] == DeliveryStatus.DELIVERED
    finally:
        held.release_rcpt.set()


async def test_only_the_public_routes_are_on_the_api_port(rig: Rig) -> None:
    api, health = rig.server.api_port, rig.server.http_port
    assert api != health
    token = sign_unsubscribe(1, SECRET.encode())
    for path in ("/healthz", "/readyz", "/metrics", "/unsubscribe"):
        assert await _status(rig, "GET", rig.url(path)) == 404, path
    # The API of DESIGN §8 answers nothing without a token (tests/integration/test_api_*).
    assert await _status(rig, "GET", rig.url("/api/v1/jobs")) == 401
    assert await _status(rig, "GET", rig.url("/ses/events")) == 405
    assert await _status(rig, "GET", rig.url(f"/unsubscribe/{token}")) == 200
    # Nothing of the API listener on the health port.
    assert await _status(rig, "POST", rig.url("/ses/events", port=health)) == 404
    for method in ("GET", "POST"):
        status = await _status(rig, method, rig.url(f"/unsubscribe/{token}", port=health))
        assert status == 404, method
    assert await _status(rig, "GET", rig.url("/healthz", port=health)) == 200


# -- /unsubscribe/{token} ----------------------------------------------------------------


async def test_the_link_shows_a_button_and_no_address_and_suppresses_nothing(rig: Rig) -> None:
    row = await rig.sent_email()
    url = rig.url(f"/unsubscribe/{sign_unsubscribe(row['id'], SECRET.encode())}")
    async with rig.client.get(url) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
        headers = response.headers
    assert '<form method="post">' in page
    assert "<button" in page
    assert row["to_address"] not in page
    assert row["to_address"].split("@")[1] not in page
    _check_security_headers(headers)
    assert rig.suppressions() == []  # a link checker's or prefetcher's GET changes nothing


async def test_a_one_click_post_suppresses_the_address_for_later_jobs(rig: Rig) -> None:
    row = await rig.sent_email()
    url = rig.url(f"/unsubscribe/{sign_unsubscribe(row['id'], SECRET.encode())}")
    async with rig.client.post(url, data=ONE_CLICK) as response:
        assert response.status == 200
        page = await response.text()
        _check_security_headers(response.headers)
    assert row["to_address"] not in page
    assert rig.suppressions() == [{"address": row["to_address"], "reason": "unsubscribe"}]
    metrics = await _text(rig, rig.url("/metrics", port=rig.server.http_port))
    assert 'delivery_event_outcomes_total{outcome="unsubscribe_recorded"} 1.0' in metrics
    # Kept apart from SNS's UnsubscribeConfirmation (our endpoint cut off from the topic).
    assert 'outcome="unsubscribed"' not in metrics
    sends_before = len(rig.sink.envelopes)

    later = await create_job(rig.store, [customer(1), customer(2)])
    job = await wait_for_job(rig.store, later.id, timeout=30)
    assert (job.status, job.failed_count) == (JobStatus.COMPLETED, 0)
    suppressed, sent = rig.emails(later.id)
    assert (suppressed["status"], suppressed["attempts"]) == (EmailStatus.SUPPRESSED, 0)
    assert suppressed["provider_message_id"] is None
    assert sent["status"] == EmailStatus.SENT
    recipients = [envelope.rcpt_tos for envelope in rig.sink.envelopes[sends_before:]]
    assert recipients == [[sent["to_address"]]]


def _altered(token: str) -> str:
    """``token`` with one character of its signature changed (not the last: its low bits
    may be padding, which the canonical-encoding check catches instead)."""
    position = len(token) // 2
    swapped = "B" if token[position] == "A" else "A"
    return token[:position] + swapped + token[position + 1 :]


BAD_TOKENS: dict[str, Callable[[int], str]] = {
    "other-key": lambda email_id: sign_unsubscribe(email_id, secrets.token_bytes(32)),
    "garbage": lambda _: "not-a-token",
    "truncated": lambda email_id: sign_unsubscribe(email_id, SECRET.encode())[:-1],
    "altered": lambda email_id: _altered(sign_unsubscribe(email_id, SECRET.encode())),
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_a_bad_token_is_404_and_changes_nothing(rig: Rig, kind: str) -> None:
    row = await rig.sent_email()
    url = rig.url(f"/unsubscribe/{BAD_TOKENS[kind](row['id'])}")
    for method in ("GET", "POST"):
        async with rig.client.request(method, url, data=ONE_CLICK) as response:
            assert response.status == 404, method
            page = await response.text()
            _check_security_headers(response.headers)
        assert "not valid" in page
    assert rig.suppressions() == []
    metrics = await _text(rig, rig.url("/metrics", port=rig.server.http_port))
    assert 'delivery_event_outcomes_total{outcome="unsubscribe_invalid"} 2.0' in metrics


async def test_a_link_of_an_email_gone_since_is_404_on_post(rig: Rig) -> None:
    await rig.sent_email()
    url = rig.url(f"/unsubscribe/{sign_unsubscribe(2**40, SECRET.encode())}")
    # The page does not look the email up (a GET reads nothing); the one-click POST does.
    assert await _status(rig, "GET", url) == 200
    assert await _status(rig, "POST", url) == 404
    assert rig.suppressions() == []


async def test_without_a_secret_there_are_no_unsubscribe_routes(
    tmp_path: Path, identity: SigningIdentity
) -> None:
    async with running(tmp_path, identity, unsubscribe_secret=None) as rig:
        row = await rig.sent_email()
        url = rig.url(f"/unsubscribe/{sign_unsubscribe(row['id'], SECRET.encode())}")
        assert await _status(rig, "GET", url) == 404
        assert await _status(rig, "POST", url) == 404
        assert rig.suppressions() == []
        assert (await rig.post_event(rig.delivery(row)))[0] == 403  # the listener is up


def _check_security_headers(headers: Any) -> None:
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "no-store"


async def _status(rig: Rig, method: str, url: str) -> int:
    data = ONE_CLICK if method == "POST" else None
    async with rig.client.request(method, url, data=data) as response:
        return response.status


async def _text(rig: Rig, url: str) -> str:
    async with rig.client.get(url) as response:
        assert response.status == 200
        return await response.text()


# -- the settings the API listener and the roles need ------------------------------------


async def test_a_cert_origin_that_is_not_an_origin_stops_the_start(tmp_path: Path) -> None:
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 'delivery.db'}",
        outbox_dir=tmp_path / "outbox",
        http_port=0,
        api_port=0,
        sns_cert_origin="127.0.0.1:8443",  # no scheme: no host would ever match
        log_level="warning",
    )
    async with prepared_store(settings):
        with pytest.raises(ConfigError, match="DELIVERY_SNS_CERT_ORIGIN: must be an origin"):
            async with RunningServer(settings):
                pass


@pytest.mark.parametrize(
    ("role", "setting"),
    [("tracker", "DELIVERY_EVENTS_QUEUE_URL"), ("api", "DELIVERY_API_PORT")],
)
def test_a_role_without_its_setting_exits_2_naming_it(
    role: str,
    setting: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = tmp_path / "delivery.db"
    monkeypatch.setenv("DELIVERY_DATABASE_URL", f"sqlite:///{database}")
    # Split roles need a shared queue; its address is never called here.
    monkeypatch.setenv("DELIVERY_QUEUE", "sqs")
    monkeypatch.setenv("DELIVERY_SQS_QUEUE_URL", "http://127.0.0.1:9/000000000000/delivery")
    monkeypatch.delenv(setting, raising=False)
    assert main(["run", "--role", role]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{setting}: required with --role {role}" in err
    assert not database.exists()  # refused before anything was opened


def test_run_help_names_the_tracking_roles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    usage = capsys.readouterr().out
    assert "{all,publisher,consumer,tracker,api}" in usage
