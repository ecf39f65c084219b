"""``POST /ses/events`` through real aiohttp servers on 127.0.0.1.

One server is our endpoint (the handler with the SNS verifier behind it); the other plays
``sns.<region>.amazonaws.com`` over TLS from a throwaway CA: it serves the signing
certificate and answers ``ConfirmSubscription``, and counts what it was asked. Messages are
shaped like AWS's documented examples and signed with a local RSA key, v1 and v2.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from structlog.testing import capture_logs

from delivery_server.adapters.aws.sns import SnsHostPolicy, SnsVerifier
from delivery_server.errors import MalformedEventError
from delivery_server.http.ses_events import OUTCOMES, ses_events_handler
from tests.support.sns_messages import SES_EVENT, TOPIC_ARN, confirmation, notification, sign
from tests.support.tls import SigningIdentity, local_tls, rsa_signing_identity

pytestmark = pytest.mark.timeout(60)

CERT_PATH = "/SimpleNotificationService-0123456789abcdef.pem"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def identity() -> SigningIdentity:
    return rsa_signing_identity()


@asynccontextmanager
async def serving(app: web.Application, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """``app`` on a free port of 127.0.0.1 (the port is yielded)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@dataclass
class FakeSnsHost:
    """What ``sns.<region>.amazonaws.com`` answers us, on 127.0.0.1 over TLS."""

    certificate_pem: bytes
    port: int = 0
    requests: int = 0
    cert_gets: int = 0
    confirmations: list[dict[str, str]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._count])
        app.router.add_get(CERT_PATH, self._certificate)
        app.router.add_get("/broken.pem", self._broken)
        app.router.add_get("/", self._confirm)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests += 1
        return await handler(request)

    async def _certificate(self, _: web.Request) -> web.Response:
        self.cert_gets += 1
        return web.Response(body=self.certificate_pem, content_type="application/x-pem-file")

    async def _broken(self, _: web.Request) -> web.Response:
        return web.Response(status=500)

    async def _confirm(self, request: web.Request) -> web.Response:
        self.confirmations.append(dict(request.query))
        return web.Response(text="<ConfirmSubscriptionResponse/>", content_type="text/xml")


@dataclass
class Endpoint:
    """Our ``POST /ses/events`` and what it did: the messages ingested, the outcomes."""

    url: str
    client: aiohttp.ClientSession
    ingested: list[str] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)

    async def post(self, body: dict[str, str] | bytes) -> tuple[int, str]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.client.post(self.url, data=data, headers=_SNS_HEADERS) as response:
            return response.status, await response.text()


# SNS posts its JSON as text/plain.
_SNS_HEADERS = {"Content-Type": "text/plain; charset=UTF-8"}


@dataclass
class Rig:
    aws: FakeSnsHost
    session: aiohttp.ClientSession  # trusts the fake host's CA, as ours trusts AWS's
    key: rsa.RSAPrivateKey  # the key of the certificate the fake host serves

    def verifier(
        self, *, production_hosts: bool = False, clock: Callable[[], dt.datetime] = now
    ) -> SnsVerifier:
        """The verifier as the lead builds it; only the allowed host and port differ."""
        hosts = (
            SnsHostPolicy()
            if production_hosts
            else SnsHostPolicy(host=re.compile(r"127\.0\.0\.1"), port=self.aws.port)
        )
        return SnsVerifier(self.session, {TOPIC_ARN}, hosts=hosts, clock=clock)

    def cert_url(self, path: str = CERT_PATH) -> str:
        return self.aws.url(path)

    def signed(
        self,
        version: str = "2",
        *,
        at: dt.datetime | None = None,
        topic_arn: str = TOPIC_ARN,
        cert_url: str | None = None,
    ) -> dict[str, str]:
        """A notification signed as SNS signs it."""
        document = notification(
            at=at or now(), topic_arn=topic_arn, cert_url=cert_url or self.cert_url()
        )
        return sign(document, self.key, version)


@pytest.fixture
async def rig(tmp_path: Path, identity: SigningIdentity) -> AsyncIterator[Rig]:
    tls = local_tls(tmp_path)
    aws = FakeSnsHost(identity.certificate_pem)
    async with serving(aws.app(), tls.server_context) as port:
        aws.port = port
        trust = ssl.create_default_context(cafile=tls.ca_file)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as session:
            yield Rig(aws, session, identity.key)


@asynccontextmanager
async def endpoint(
    verifier: SnsVerifier, ingest: Callable[[str], Awaitable[None]] | None = None
) -> AsyncIterator[Endpoint]:
    """``POST /ses/events`` served on 127.0.0.1 with ``verifier`` behind it."""
    async with aiohttp.ClientSession() as client:
        done = Endpoint(url="", client=client)

        async def record(message: str) -> None:
            done.ingested.append(message)

        handler = ses_events_handler(verifier, ingest or record, done.outcomes.append)
        app = web.Application()
        app.router.add_post("/ses/events", handler)
        async with serving(app) as port:
            done.url = f"http://127.0.0.1:{port}/ses/events"
            yield done


class TestAccepted:
    @pytest.mark.parametrize("version", ["1", "2"])
    async def test_a_signed_notification_is_ingested(self, rig: Rig, version: str) -> None:
        async with endpoint(rig.verifier()) as ses_events:
            assert await ses_events.post(rig.signed(version)) == (200, "accepted")
        assert ses_events.ingested == [SES_EVENT]
        assert ses_events.outcomes == ["accepted"]

    async def test_the_certificate_is_fetched_once_for_many_messages(self, rig: Rig) -> None:
        async with endpoint(rig.verifier()) as ses_events:
            together = await asyncio.gather(
                ses_events.post(rig.signed("1")), ses_events.post(rig.signed("2"))
            )
            later = await ses_events.post(rig.signed("2"))
        assert [*together, later] == [(200, "accepted")] * 3
        assert rig.aws.cert_gets == 1
        assert len(ses_events.ingested) == 3

    async def test_a_subscription_is_confirmed_at_its_subscribe_url(self, rig: Rig) -> None:
        message = confirmation(at=now(), cert_url=rig.cert_url(), subscribe_base=rig.aws.url("/"))
        async with endpoint(rig.verifier()) as ses_events:
            assert await ses_events.post(sign(message, rig.key, "1")) == (200, "confirmed")
        assert rig.aws.confirmations == [
            {"Action": "ConfirmSubscription", "TopicArn": TOPIC_ARN, "Token": message["Token"]}
        ]
        assert ses_events.ingested == []
        assert ses_events.outcomes == ["confirmed"]

    async def test_an_unsubscribe_confirmation_is_only_acknowledged(self, rig: Rig) -> None:
        message = confirmation(
            at=now(),
            kind="UnsubscribeConfirmation",
            cert_url=rig.cert_url(),
            subscribe_base=rig.aws.url("/"),
        )
        async with endpoint(rig.verifier()) as ses_events:
            assert await ses_events.post(sign(message, rig.key, "2")) == (200, "unsubscribed")
        assert rig.aws.confirmations == []
        assert ses_events.ingested == []


class TestRefused:
    async def test_a_forged_signature_changes_nothing(self, rig: Rig) -> None:
        forged = {**rig.signed("2"), "Message": '{"eventType": "Complaint"}'}
        async with endpoint(rig.verifier()) as ses_events:
            assert await ses_events.post(forged) == (403, "forged")
        assert ses_events.ingested == []
        assert ses_events.outcomes == ["forged"]

    async def test_a_message_signed_by_another_key_is_forged(self, rig: Rig) -> None:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        message = sign(notification(at=now(), cert_url=rig.cert_url()), other, "1")
        async with endpoint(rig.verifier()) as ses_events:
            assert await ses_events.post(message) == (403, "forged")
        assert ses_events.ingested == []

    async def test_an_unsigned_message_is_refused_without_a_fetch(self, rig: Rig) -> None:
        unsigned = notification(at=now(), cert_url=rig.cert_url())
        async with endpoint(rig.verifier()) as ses_events:
            assert await ses_events.post(unsigned) == (403, "forged")
        assert ses_events.ingested == []
        assert rig.aws.requests == 0

    async def test_another_topic_is_refused_without_a_fetch(self, rig: Rig) -> None:
        message = rig.signed(topic_arn="arn:aws:sns:us-west-2:123456789012:SomeoneElse")
        async with endpoint(rig.verifier()) as ses_events:
            assert await ses_events.post(message) == (403, "refused_topic")
        assert rig.aws.requests == 0

    async def test_no_allowed_topic_refuses_all(self, rig: Rig) -> None:
        hosts = SnsHostPolicy(host=re.compile(r"127\.0\.0\.1"), port=rig.aws.port)
        async with endpoint(SnsVerifier(rig.session, (), hosts=hosts)) as ses_events:
            assert await ses_events.post(rig.signed()) == (403, "refused_topic")

    @pytest.mark.parametrize(
        "cert_url",
        [
            "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
            "https://sns.us-east-1.amazonaws.com@evil.example/",
        ],
    )
    async def test_a_certificate_on_another_host_is_never_fetched(
        self, rig: Rig, cert_url: str
    ) -> None:
        # The production host rule, as deployed.
        async with endpoint(rig.verifier(production_hosts=True)) as ses_events:
            assert await ses_events.post(rig.signed(cert_url=cert_url)) == (
                403,
                "refused_cert_url",
            )
        assert ses_events.ingested == []

    async def test_production_rule_refuses_the_loopback_certificate(self, rig: Rig) -> None:
        async with endpoint(rig.verifier(production_hosts=True)) as ses_events:
            assert await ses_events.post(rig.signed()) == (403, "refused_cert_url")
        assert rig.aws.requests == 0

    @pytest.mark.parametrize(
        "age", [dt.timedelta(hours=1, minutes=1), dt.timedelta(days=-1), -dt.timedelta(minutes=6)]
    )
    async def test_an_old_or_future_message_is_expired(self, rig: Rig, age: dt.timedelta) -> None:
        async with endpoint(rig.verifier()) as ses_events:
            assert await ses_events.post(rig.signed(at=now() - age)) == (403, "expired")
        assert rig.aws.requests == 0
        assert ses_events.ingested == []

    async def test_a_signing_certificate_past_its_validity_is_refused(self, rig: Rig) -> None:
        two_days_on = now() + dt.timedelta(days=2)  # the certificate is valid for one
        verifier = rig.verifier(clock=lambda: two_days_on)
        async with endpoint(verifier) as ses_events:
            assert await ses_events.post(rig.signed(at=two_days_on)) == (403, "forged")
        assert ses_events.ingested == []

    async def test_a_subscribe_url_on_another_host_is_not_visited(self, rig: Rig) -> None:
        message = confirmation(
            at=now(),
            cert_url=rig.cert_url(),
            subscribe_base="https://sns.us-west-2.amazonaws.com.evil.example/",
        )
        async with endpoint(rig.verifier()) as ses_events:
            answer = await ses_events.post(sign(message, rig.key, "2"))
        assert answer == (403, "refused_subscribe_url")
        assert rig.aws.confirmations == []

    async def test_a_certificate_host_in_trouble_asks_sns_to_retry(self, rig: Rig) -> None:
        async with endpoint(rig.verifier()) as ses_events:
            broken = rig.signed(cert_url=rig.cert_url("/broken.pem"))
            assert await ses_events.post(broken) == (503, "unavailable")
            missing = rig.signed(cert_url=rig.cert_url("/SimpleNotificationService-gone.pem"))
            assert await ses_events.post(missing) == (403, "forged")
            assert await ses_events.post(rig.signed()) == (200, "accepted")
        assert ses_events.outcomes == ["unavailable", "forged", "accepted"]


class TestBadInput:
    async def test_a_huge_body_is_refused_unread(self, rig: Rig) -> None:
        huge = json.dumps({**rig.signed(), "Message": "x" * 300_000}).encode()

        async def chunked() -> AsyncIterator[bytes]:
            for start in range(0, len(huge), 16_384):
                yield huge[start : start + 16_384]

        async with endpoint(rig.verifier()) as ses_events:
            assert await ses_events.post(huge) == (413, "too_large")
            async with ses_events.client.post(ses_events.url, data=chunked()) as response:
                assert response.status == 413  # no Content-Length: counted while read
        assert ses_events.outcomes == ["too_large", "too_large"]
        assert rig.aws.requests == 0

    @pytest.mark.parametrize(
        "body",
        [b"{not json", b"\xff\xfe", b"[]", b'"Notification"', b"[" * 100_000],
    )
    async def test_a_body_that_is_not_a_json_object_is_malformed(
        self, rig: Rig, body: bytes
    ) -> None:
        async with endpoint(rig.verifier()) as ses_events:
            assert await ses_events.post(body) == (400, "malformed")

    @pytest.mark.parametrize("missing", ["MessageId", "Message", "Timestamp", "Type"])
    async def test_a_missing_field_is_malformed(self, rig: Rig, missing: str) -> None:
        message = rig.signed()
        del message[missing]
        async with endpoint(rig.verifier()) as ses_events:
            assert await ses_events.post(message) == (400, "malformed")
        assert rig.aws.requests == 0

    async def test_an_event_ingest_cannot_read_is_not_retried(self, rig: Rig) -> None:
        async def unreadable(_: str) -> None:
            raise MalformedEventError("SES event has no mail.messageId")

        async with endpoint(rig.verifier(), unreadable) as ses_events:
            assert await ses_events.post(rig.signed()) == (400, "malformed")

    async def test_an_ingest_failure_asks_sns_to_deliver_again(self, rig: Rig) -> None:
        async def failing(_: str) -> None:
            raise ConnectionResetError("database went away")

        async with endpoint(rig.verifier(), failing) as ses_events:
            assert await ses_events.post(rig.signed()) == (503, "unavailable")


async def test_logs_carry_no_message_content(rig: Rig) -> None:
    async def failing(_: str) -> None:
        raise RuntimeError("recipient@example.com")  # an ingest error must not leak either

    forged = {**rig.signed(), "Message": SES_EVENT.replace("Delivery", "Bounce")}
    with capture_logs() as logs:
        async with endpoint(rig.verifier()) as ses_events:
            await ses_events.post(rig.signed())
            await ses_events.post(forged)
            await ses_events.post(b'{"Message": "recipient@example.com"')
        async with endpoint(rig.verifier(), failing) as ses_events:
            await ses_events.post(rig.signed())
    assert {entry.get("outcome") for entry in logs} >= {"forged", "malformed"}
    assert any(entry["event"] == "ses_event_ingest_failed" for entry in logs)
    text = json.dumps(logs, default=str)
    assert "example.com" not in text
    assert "eventType" not in text


def test_every_outcome_is_listed_for_the_metric() -> None:
    assert len(set(OUTCOMES)) == len(OUTCOMES)
    assert {"accepted", "confirmed", "forged", "malformed", "refused_topic"} <= set(OUTCOMES)
    assert {"refused_cert_url", "expired", "too_large", "unavailable"} <= set(OUTCOMES)
