"""The Sender contract, run against every adapter: SES (moto), SMTP (aiosmtpd), outbox.

``SenderContract`` holds the behaviour every sender promises; each subclass provides a
``harness`` (the sender plus a way to read what its far side received) and adds the
error mapping tests of its own adapter.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from delivery_server import __version__
from delivery_server.adapters.aws.ses import open_ses_sender
from delivery_server.adapters.aws.session import AwsHttp
from delivery_server.adapters.sender_outbox import OutboxSender
from delivery_server.adapters.sender_smtp import SmtpSender
from delivery_server.errors import (
    AccountPausedError,
    PermanentError,
    RetryableError,
    ThrottledError,
    UncertainSendError,
)
from delivery_server.mime import CheckedEmail
from delivery_server.models import Attachment, OutgoingEmail
from delivery_server.ports import Sender
from tests.support.http_stub import HttpStub
from tests.support.moto_ses import sent_emails, verify_identity
from tests.support.smtp_sink import SinkHandler, free_port, smtp_sink
from tests.support.tls import local_tls

pytestmark = pytest.mark.timeout(60)

FROM = "Bank Statements <statements@bank.example.com>"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


@dataclass(frozen=True)
class Received:
    """One email as the far side of a sender got it."""

    to: str
    subject: str
    text: str | None
    html: str | None = None
    attachments: tuple[tuple[str, str, bytes], ...] = ()


@dataclass
class Harness:
    sender: Sender
    received: Callable[[], Awaitable[list[Received]]]


def parse_received(raw: bytes) -> Received:
    """Read a MIME message back, insisting on exactly one To and one Subject, no Bcc."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert len(msg.get_all("To", [])) == 1
    assert len(msg.get_all("Subject", [])) == 1
    assert msg.get_all("Bcc") is None
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    return Received(
        to=str(msg["To"]),
        subject=str(msg["Subject"]),
        text=_lf(text.get_content()) if text is not None else None,
        html=_lf(html.get_content()) if html is not None else None,
        attachments=tuple(_attachment(part) for part in msg.iter_attachments()),
    )


def _attachment(part: EmailMessage) -> tuple[str, str, bytes]:
    data = part.get_content()
    assert isinstance(data, bytes)
    return str(part.get_filename()), part.get_content_type(), data


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def statement(to: str = "ann@example.org", **changes: object) -> CheckedEmail:
    fields: dict[str, object] = {
        "from_address": FROM,
        "to_address": to,
        "subject": "Votre relevé annuel 2024",
        "text_body": "Dear Ann,\nyour statement is ready.\n",
        "email_id": 42,
        "job_id": 7,
    }
    fields.update(changes)
    return CheckedEmail(OutgoingEmail(**fields))  # type: ignore[arg-type]


def with_pdf(to: str = "ann@example.org") -> CheckedEmail:
    return statement(
        to,
        html_body="<p>Dear Ann,</p><p>your <b>statement</b> is attached.</p>\n",
        attachments=(Attachment("relevé-2024.pdf", "application/pdf", PDF),),
    )


class SenderContract:
    """What every Sender promises. Subclasses provide the ``harness`` fixture."""

    async def test_plain_email_is_received_once(self, harness: Harness) -> None:
        message_id = await harness.sender.send(statement())

        assert isinstance(message_id, str)
        assert message_id
        [got] = await harness.received()
        assert got.to == "ann@example.org"
        assert got.subject == "Votre relevé annuel 2024"
        assert got.text == "Dear Ann,\nyour statement is ready.\n"
        assert got.attachments == ()

    async def test_html_and_pdf_attachment_are_received_once(self, harness: Harness) -> None:
        await harness.sender.send(with_pdf())

        [got] = await harness.received()
        assert got.to == "ann@example.org"
        assert got.subject == "Votre relevé annuel 2024"
        assert got.text == "Dear Ann,\nyour statement is ready.\n"
        assert got.html == "<p>Dear Ann,</p><p>your <b>statement</b> is attached.</p>\n"
        assert got.attachments == (("relevé-2024.pdf", "application/pdf", PDF),)

    async def test_each_send_is_exactly_one_email(self, harness: Harness) -> None:
        recipients = ["a@example.org", "b@example.org", "c@example.org"]
        ids = [await harness.sender.send(statement(to)) for to in recipients]

        got = await harness.received()
        assert sorted(r.to for r in got) == recipients
        assert len(set(ids)) == len(recipients)

    # Senders take a CheckedEmail only, and the checks run when one is made: an email that
    # fails them can never be handed to a sender.
    async def test_invalid_recipient_is_permanent_and_not_sent(self, harness: Harness) -> None:
        with pytest.raises(PermanentError, match="invalid recipient address") as caught:
            statement("ann.example.org")
        assert "ann" not in str(caught.value)

        await harness.sender.send(statement("ok@example.org"))
        assert [r.to for r in await harness.received()] == ["ok@example.org"]

    async def test_header_injection_is_permanent_and_not_sent(self, harness: Harness) -> None:
        with pytest.raises(PermanentError, match="header injection attempt in Subject"):
            statement(subject="Hi\r\nBcc: x@evil.example.com")
        with pytest.raises(PermanentError, match="header injection attempt in From"):
            statement(from_address="=?utf-8?q?admin=40bank?= <statements@bank.example.com>")

        await harness.sender.send(statement("ok@example.org"))
        assert [r.to for r in await harness.received()] == ["ok@example.org"]


# --- SES (moto) ---------------------------------------------------------------------


def _from_moto(item: dict[str, Any]) -> Received:
    if item["raw"] is not None:
        return parse_received(item["raw"])
    # Simple content: moto keeps the HTML body when there is one, else the text body.
    [to] = item["to"]
    return Received(to=to, subject=item["subject"], text=item["body"])


def _json_body(request: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(request.partition(b"\r\n\r\n")[2])
    return body


class TestSesSender(SenderContract):
    """Both ways to reach SES (DELIVERY_AWS_HTTP): the same contract, the same error table."""

    @pytest.fixture(params=["direct", "sdk"])
    def http(self, request: pytest.FixtureRequest) -> AwsHttp:
        mode: AwsHttp = request.param
        return mode

    @pytest.fixture
    async def harness(self, http: AwsHttp, moto: str) -> AsyncIterator[Harness]:
        verify_identity(moto, "statements@bank.example.com")

        async def received() -> list[Received]:
            return [_from_moto(item) for item in await asyncio.to_thread(sent_emails, moto)]

        async with open_ses_sender(http=http, endpoint_url=moto, timeout=10) as sender:
            yield Harness(sender, received)

    async def test_unverified_sender_is_permanent(self, http: AwsHttp, moto: str) -> None:
        async with open_ses_sender(http=http, endpoint_url=moto, timeout=10) as sender:
            with pytest.raises(PermanentError, match="MessageRejected") as caught:
                await sender.send(statement(from_address="nobody@unverified.example.com"))
        assert "unverified.example.com" not in str(caught.value)
        assert sent_emails(moto) == []

    async def test_connection_refused_is_retryable(self, http: AwsHttp, aws_env: None) -> None:
        async with open_ses_sender(
            http=http, endpoint_url=f"http://127.0.0.1:{free_port()}"
        ) as sender:
            with pytest.raises(RetryableError):
                await sender.send(statement())

    async def test_missing_credentials_pause_sending(
        self, http: AwsHttp, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
        monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        async with (
            HttpStub(body=b'{"MessageId": "never"}') as stub,
            open_ses_sender(http=http, endpoint_url=stub.endpoint) as sender,
        ):
            with pytest.raises(AccountPausedError, match="credentials"):
                await sender.send(statement())
        assert stub.requests == []

    async def test_no_answer_after_the_request_is_uncertain(
        self, http: AwsHttp, aws_env: None
    ) -> None:
        async with (
            HttpStub("hang") as stub,
            open_ses_sender(http=http, endpoint_url=stub.endpoint, timeout=0.5) as sender,
        ):
            with pytest.raises(UncertainSendError):
                await sender.send(statement())
        assert len(stub.requests) == 1  # one attempt: the SDK did not retry

    async def test_an_unreadable_success_answer_is_uncertain(
        self, http: AwsHttp, aws_env: None
    ) -> None:
        # A 200 from SES (or a proxy in front of it) that says nothing we can read: the
        # email may have been accepted, so it must not be resent blindly.
        async with (
            HttpStub(body=b"<html>OK</html>", headers={"Content-Type": "text/html"}) as stub,
            open_ses_sender(http=http, endpoint_url=stub.endpoint) as sender,
        ):
            with pytest.raises(UncertainSendError):
                await sender.send(statement())
        assert len(stub.requests) == 1

    async def test_connection_dropped_after_the_request_is_uncertain(
        self, http: AwsHttp, aws_env: None
    ) -> None:
        async with (
            HttpStub("close") as stub,
            open_ses_sender(http=http, endpoint_url=stub.endpoint) as sender,
        ):
            with pytest.raises(UncertainSendError):
                await sender.send(with_pdf())
        assert len(stub.requests) == 1

    @pytest.mark.parametrize(
        ("status", "code", "message", "expected"),
        [
            (500, "InternalFailure", "internal", RetryableError),
            (503, "ServiceUnavailable", "down", RetryableError),
            (429, "TooManyRequestsException", "Maximum sending rate exceeded.", ThrottledError),
            (400, "LimitExceededException", "limit", ThrottledError),
            (400, "AccountSuspendedException", "suspended", AccountPausedError),
            (400, "SendingPausedException", "paused", AccountPausedError),
            (400, "MessageRejected", "Email address is not verified.", PermanentError),
            (400, "BadRequestException", "bad", PermanentError),
            (404, "NotFoundException", "no such configuration set", PermanentError),
        ],
    )
    async def test_ses_errors_map_onto_the_error_tree(
        self,
        http: AwsHttp,
        aws_env: None,
        status: int,
        code: str,
        message: str,
        expected: type[Exception],
    ) -> None:
        async with (
            HttpStub.aws_error(status, code, message) as stub,
            open_ses_sender(http=http, endpoint_url=stub.endpoint) as sender,
        ):
            with pytest.raises(expected, match=code):
                await sender.send(statement())
        assert len(stub.requests) == 1  # never retried by the SDK, whatever the error

    async def test_simple_request_carries_ids_and_reply_to(
        self, http: AwsHttp, aws_env: None
    ) -> None:
        body = b'{"MessageId": "stub-1"}'
        async with (
            HttpStub(body=body) as stub,
            open_ses_sender(
                http=http, endpoint_url=stub.endpoint, configuration_set="statements"
            ) as sender,
        ):
            message_id = await sender.send(
                statement(html_body="<p>Hi</p>", reply_to="Help <help@bank.example.com>")
            )

        assert message_id == "stub-1"
        [request] = [_json_body(r) for r in stub.requests]
        assert request["FromEmailAddress"] == FROM
        assert request["Destination"] == {"ToAddresses": ["ann@example.org"]}
        assert request["ReplyToAddresses"] == ["help@bank.example.com"]
        assert request["ConfigurationSetName"] == "statements"
        assert request["EmailTags"] == [
            {"Name": "job_id", "Value": "7"},
            {"Name": "email_id", "Value": "42"},
        ]
        simple = request["Content"]["Simple"]
        assert simple["Subject"] == {"Data": "Votre relevé annuel 2024", "Charset": "UTF-8"}
        assert simple["Body"]["Html"] == {"Data": "<p>Hi</p>", "Charset": "UTF-8"}
        assert {"Name": "X-Delivery-Email-Id", "Value": "42"} in simple["Headers"]

    async def test_requests_carry_a_fixed_user_agent_naming_us(
        self, http: AwsHttp, aws_env: None
    ) -> None:
        async with (
            HttpStub(body=b'{"MessageId": "stub-3"}') as stub,
            open_ses_sender(http=http, endpoint_url=stub.endpoint) as sender,
        ):
            await sender.send(statement())
            await sender.send(statement())

        agents = {
            line
            for request in stub.requests
            for line in request.partition(b"\r\n\r\n")[0].split(b"\r\n")
            if line.lower().startswith(b"user-agent:")
        }
        [agent] = agents  # the same, computed once
        assert b"botocore/" in agent
        assert f" delivery-server/{__version__}".encode() in agent

    async def test_raw_request_is_the_checked_mime_message(
        self, http: AwsHttp, aws_env: None
    ) -> None:
        async with (
            HttpStub(body=b'{"MessageId": "stub-2"}') as stub,
            open_ses_sender(http=http, endpoint_url=stub.endpoint) as sender,
        ):
            await sender.send(with_pdf())

        [request] = [_json_body(r) for r in stub.requests]
        assert request["Destination"] == {"ToAddresses": ["ann@example.org"]}
        got = parse_received(base64.b64decode(request["Content"]["Raw"]["Data"]))
        assert got.attachments == (("relevé-2024.pdf", "application/pdf", PDF),)

    async def test_max_send_rate_reads_the_account_quota(
        self, http: AwsHttp, aws_env: None
    ) -> None:
        body = b'{"SendQuota": {"Max24HourSend": 50000, "MaxSendRate": 14.0}}'
        async with (
            HttpStub(body=body) as stub,
            open_ses_sender(http=http, endpoint_url=stub.endpoint) as sender,
        ):
            assert await sender.max_send_rate() == 14.0

    async def test_max_send_rate_is_none_when_ses_cannot_say(
        self, http: AwsHttp, moto: str
    ) -> None:
        # moto has no GetAccount: any error must give None, not raise.
        async with open_ses_sender(http=http, endpoint_url=moto) as sender:
            assert await sender.max_send_rate() is None


# --- SMTP (aiosmtpd) ----------------------------------------------------------------


def _smtp_sender(port: int, pool_size: int = 4) -> SmtpSender:
    return SmtpSender(
        f"smtp://127.0.0.1:{port}",
        timeout=5,
        pool_size=pool_size,
        local_hostname="client.localhost",
    )


class TestSmtpSender(SenderContract):
    @pytest.fixture
    def handler(self) -> SinkHandler:
        return SinkHandler()

    @pytest.fixture
    async def harness(self, handler: SinkHandler) -> AsyncIterator[Harness]:
        with smtp_sink(handler) as sink:
            sender = _smtp_sender(sink.port)

            async def received() -> list[Received]:
                for envelope in handler.envelopes:
                    assert envelope.mail_from == "statements@bank.example.com"
                    assert len(envelope.rcpt_tos) == 1
                return [parse_received(e.content) for e in handler.envelopes]

            try:
                yield Harness(sender, received)
            finally:
                await sender.close()

    async def test_refused_recipient_is_permanent(
        self, harness: Harness, handler: SinkHandler
    ) -> None:
        handler.rcpt_replies["gone@example.org"] = "550 5.1.1 <gone@example.org>: no such user"

        with pytest.raises(PermanentError, match=r"550 5\.1\.1") as caught:
            await harness.sender.send(statement("gone@example.org"))
        assert "gone@" not in str(caught.value)
        # The refused transaction was reset: the same connection carries the next email.
        await harness.sender.send(statement("ok@example.org"))
        assert [r.to for r in await harness.received()] == ["ok@example.org"]
        assert len(set(handler.peers)) == 1

    async def test_temporary_failure_is_retryable(
        self, harness: Harness, handler: SinkHandler
    ) -> None:
        handler.rcpt_replies["busy@example.org"] = "451 4.3.0 try again later"

        with pytest.raises(RetryableError, match="451"):
            await harness.sender.send(statement("busy@example.org"))
        assert await harness.received() == []

    async def test_rate_limit_reply_is_throttled(
        self, harness: Harness, handler: SinkHandler
    ) -> None:
        handler.rcpt_replies["many@example.org"] = "452 4.7.0 sending rate limit exceeded"

        with pytest.raises(ThrottledError):
            await harness.sender.send(statement("many@example.org"))

    async def test_connection_refused_is_retryable(self) -> None:
        sender = _smtp_sender(free_port())
        with pytest.raises(RetryableError):
            await sender.send(statement())
        await sender.close()

    async def test_connection_lost_after_data_is_uncertain(
        self, harness: Harness, handler: SinkHandler
    ) -> None:
        handler.drop_after_data.add("ann@example.org")

        with pytest.raises(UncertainSendError):
            await harness.sender.send(statement())

    async def test_connections_are_reused(self, harness: Harness, handler: SinkHandler) -> None:
        for to in ("a@example.org", "b@example.org", "c@example.org"):
            await harness.sender.send(statement(to))

        assert len(handler.peers) == 3
        assert len(set(handler.peers)) == 1

    async def test_dead_pooled_connection_is_replaced(
        self, harness: Harness, handler: SinkHandler
    ) -> None:
        await harness.sender.send(statement("a@example.org"))
        handler.drop_at_mail = 1  # the server closes the idle connection at the next MAIL

        await harness.sender.send(statement("b@example.org"))

        assert [r.to for r in await harness.received()] == ["a@example.org", "b@example.org"]
        assert len(set(handler.peers)) == 2

    async def test_connection_lost_on_a_fresh_connection_is_retryable(
        self, harness: Harness, handler: SinkHandler
    ) -> None:
        handler.drop_at_mail = 1

        with pytest.raises(RetryableError, match="before DATA"):
            await harness.sender.send(statement())
        assert await harness.received() == []

    async def test_a_send_cancelled_mid_transaction_does_not_poison_the_pool(
        self, harness: Harness, handler: SinkHandler
    ) -> None:
        handler.hold_rcpt = True
        stuck = asyncio.create_task(harness.sender.send(statement("a@example.org")))
        assert await asyncio.to_thread(handler.rcpt_reached.wait, 10)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        handler.hold_rcpt = False
        handler.release_rcpt.set()

        # A connection left inside MAIL/RCPT would answer the next MAIL with 503.
        await harness.sender.send(statement("b@example.org"))
        assert [r.to for r in await harness.received()] == ["b@example.org"]
        assert len(set(handler.peers)) == 2

    async def test_pool_bounds_concurrent_connections(self, handler: SinkHandler) -> None:
        with smtp_sink(handler) as sink:
            sender = _smtp_sender(sink.port, pool_size=2)
            recipients = [f"r{i}@example.org" for i in range(8)]
            await asyncio.gather(*(sender.send(statement(to)) for to in recipients))
            await sender.close()

        assert sorted(e.rcpt_tos[0] for e in handler.envelopes) == sorted(recipients)
        assert 1 <= len(set(handler.peers)) <= 2

    async def test_starttls_is_used_and_verified_when_offered(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        tls = local_tls(tmp_path)
        monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))  # trust the test CA
        handler = SinkHandler()
        with smtp_sink(handler, starttls=tls.server_context) as sink:
            sender = _smtp_sender(sink.port)
            await sender.send(statement())
            await sender.close()

        [envelope] = handler.envelopes
        assert envelope.tls

    async def test_untrusted_certificate_is_refused_unless_verification_is_off(
        self, tmp_path: Path
    ) -> None:
        tls = local_tls(tmp_path)  # a CA nobody trusts
        handler = SinkHandler()
        with smtp_sink(handler, starttls=tls.server_context) as sink:
            strict = _smtp_sender(sink.port)
            with pytest.raises(RetryableError, match="connection failed"):
                await strict.send(statement())
            await strict.close()
            assert handler.envelopes == []

            lax = SmtpSender(
                f"smtp://127.0.0.1:{sink.port}",
                verify_tls=False,
                timeout=5,
                local_hostname="client.localhost",
            )
            await lax.send(statement())
            await lax.close()

        [envelope] = handler.envelopes
        assert envelope.tls

    async def test_smtps_uses_implicit_tls(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        tls = local_tls(tmp_path)
        monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))
        handler = SinkHandler()
        with smtp_sink(handler, implicit_tls=tls.server_context) as sink:
            sender = SmtpSender(
                f"smtps://127.0.0.1:{sink.port}", timeout=5, local_hostname="client.localhost"
            )
            await sender.send(with_pdf())
            await sender.close()

        [envelope] = handler.envelopes
        assert envelope.tls
        assert parse_received(envelope.content).attachments[0][2] == PDF


# --- outbox -------------------------------------------------------------------------


def _names(directory: Path) -> list[str]:
    """Every file name in the directory (temporary files included)."""
    return sorted(p.name for p in directory.iterdir())


def _eml_files(directory: Path) -> list[bytes]:
    files = sorted(directory.glob("*.eml")) if directory.exists() else []
    return [f.read_bytes() for f in files]


class TestOutboxSender(SenderContract):
    @pytest.fixture
    def outbox(self, tmp_path: Path) -> Path:
        return tmp_path / "outbox"

    @pytest.fixture
    def harness(self, outbox: Path) -> Harness:
        async def received() -> list[Received]:
            return [parse_received(raw) for raw in await asyncio.to_thread(_eml_files, outbox)]

        return Harness(OutboxSender(outbox), received)

    async def test_file_is_named_after_the_ids(self, harness: Harness, outbox: Path) -> None:
        message_id = await harness.sender.send(statement())

        assert message_id == "outbox-7-42.eml"
        assert await asyncio.to_thread(_names, outbox) == ["7-42.eml"]

    async def test_a_second_send_does_not_overwrite_the_first(
        self, harness: Harness, outbox: Path
    ) -> None:
        first = await harness.sender.send(statement())
        second = await harness.sender.send(statement())

        assert (first, second) == ("outbox-7-42.eml", "outbox-7-42.2.eml")
        assert await asyncio.to_thread(_names, outbox) == ["7-42.2.eml", "7-42.eml"]

    async def test_without_ids_the_name_is_unique(self, harness: Harness, outbox: Path) -> None:
        one = await harness.sender.send(statement(email_id=None, job_id=None))
        two = await harness.sender.send(statement(email_id=None, job_id=None))

        assert one != two
        assert len(await asyncio.to_thread(_eml_files, outbox)) == 2

    async def test_files_are_standard_eml_with_crlf(self, harness: Harness, outbox: Path) -> None:
        await harness.sender.send(with_pdf())

        [raw] = await asyncio.to_thread(_eml_files, outbox)
        assert b"\r\n" in raw
        assert b"\n" not in raw.replace(b"\r\n", b"")
        assert b"X-Delivery-Email-Id: 42\r\n" in raw
