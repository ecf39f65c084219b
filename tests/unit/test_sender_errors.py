"""The error tables of the SES and SMTP senders, row by row (pure functions)."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)
from botocore.parsers import ResponseParserError

from delivery_server.adapters.aws.ses import translate_ses_error
from delivery_server.adapters.sender_smtp import parse_smtp_url, translate_smtp_reply
from delivery_server.errors import (
    AccountPausedError,
    ConfigError,
    DeliveryError,
    PermanentError,
    ProviderUnreachableError,
    RetryableError,
    ThrottledError,
    UncertainSendError,
)

URL = "https://email.us-east-1.amazonaws.com/v2/email/outbound-emails"


def client_error(code: str, message: str = "", status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {
                "HTTPStatusCode": status,
                "HTTPHeaders": {},
                "HostId": "",
                "RequestId": "r",
                "RetryAttempts": 0,
            },
        },
        "SendEmail",
    )


@pytest.mark.parametrize(
    ("code", "message", "status", "expected"),
    [
        ("MessageRejected", "Email address is not verified: ann@example.org", 400, PermanentError),
        ("MailFromDomainNotVerifiedException", "", 400, PermanentError),
        ("BadRequestException", "", 400, PermanentError),
        ("NotFoundException", "", 404, PermanentError),
        ("InvalidParameterValue", "Missing final '@domain'", 400, PermanentError),
        ("ValidationException", "", 400, PermanentError),
        ("SomethingNew", "", 400, PermanentError),
        ("TooManyRequestsException", "", 429, ThrottledError),
        ("LimitExceededException", "", 400, ThrottledError),
        ("Throttling", "Maximum sending rate exceeded.", 400, ThrottledError),
        ("SomethingNew", "Maximum sending rate exceeded.", 400, ThrottledError),
        ("SomethingNew", "", 429, ThrottledError),
        ("Throttling", "Daily message quota exceeded.", 400, AccountPausedError),
        ("AccountSuspendedException", "", 400, AccountPausedError),
        ("SendingPausedException", "", 400, AccountPausedError),
        ("AccessDeniedException", "", 403, AccountPausedError),
        ("UnrecognizedClientException", "", 403, AccountPausedError),
        ("ExpiredTokenException", "", 403, AccountPausedError),
        ("InternalFailure", "", 500, RetryableError),
        ("ServiceUnavailable", "", 503, RetryableError),
        ("SomethingNew", "", 502, RetryableError),
    ],
)
def test_ses_client_errors(
    code: str, message: str, status: int, expected: type[DeliveryError]
) -> None:
    error = translate_ses_error(client_error(code, message, status))
    assert type(error) is expected
    assert code in str(error)
    assert "ann@" not in str(error)


def _connector_error(cause: OSError) -> aiohttp.ClientConnectorError:
    key = ConnectionKey("email.example", 443, True, True, None, None, None)
    return aiohttp.ClientConnectorError(key, cause)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        # The request surely never left: nothing sent, the provider is unreachable.
        (
            EndpointConnectionError(
                endpoint_url=URL, error=_connector_error(ConnectionRefusedError())
            ),
            ProviderUnreachableError,
        ),
        (
            EndpointConnectionError(endpoint_url=URL, error=socket.gaierror()),
            ProviderUnreachableError,
        ),
        (ConnectTimeoutError(endpoint_url=URL, error=TimeoutError()), ProviderUnreachableError),
        (SSLError(endpoint_url=URL, error=OSError()), ProviderUnreachableError),
        (NoCredentialsError(), AccountPausedError),
        # The request may have reached SES: the email may have been sent.
        (ReadTimeoutError(endpoint_url=URL, error=TimeoutError()), UncertainSendError),
        (ConnectionClosedError(endpoint_url=URL, error=OSError()), UncertainSendError),
        (
            EndpointConnectionError(endpoint_url=URL, error=aiohttp.ClientOSError(104, "reset")),
            UncertainSendError,
        ),
        (aiohttp.ServerDisconnectedError(), UncertainSendError),
        # The same, as aiohttp raises them on the direct path (DELIVERY_AWS_HTTP=direct).
        (_connector_error(ConnectionRefusedError()), ProviderUnreachableError),
        (aiohttp.ConnectionTimeoutError(), ProviderUnreachableError),
        (aiohttp.SocketTimeoutError(), UncertainSendError),
        (aiohttp.ClientOSError(104, "reset"), UncertainSendError),
        # A 2xx answer that cannot be read: SES took the request, maybe the email.
        (ResponseParserError("not JSON"), UncertainSendError),
    ],
)
def test_ses_transport_errors(exc: Exception, expected: type[DeliveryError]) -> None:
    assert type(translate_ses_error(exc)) is expected


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (550, "5.1.1 <ann@example.org>: Recipient address rejected", PermanentError),
        (552, "5.3.4 Message size exceeds fixed limit", PermanentError),
        (554, "5.7.1 Message rejected", PermanentError),
        (421, "4.3.2 Service not available, closing transmission channel", RetryableError),
        (450, "4.2.1 Mailbox busy", RetryableError),
        (451, "4.3.0 Local error in processing", RetryableError),
        (452, "4.3.1 Insufficient system storage", RetryableError),
        (421, "4.7.0 Too many messages, slow down", ThrottledError),
        (450, "4.7.1 Sending rate limit exceeded", ThrottledError),
        (451, "Throttling failure: Maximum sending rate exceeded.", ThrottledError),
        (452, "4.5.3 Too many recipients", ThrottledError),
        (535, "5.7.8 Authentication credentials invalid", AccountPausedError),
        (530, "5.7.0 Must issue a STARTTLS command first", AccountPausedError),
    ],
)
def test_smtp_replies(code: int, message: str, expected: type[DeliveryError]) -> None:
    error = translate_smtp_reply(code, message)
    assert type(error) is expected
    assert str(code) in str(error)
    assert "ann@" not in str(error)


def test_smtp_reply_keeps_the_enhanced_status_code() -> None:
    assert "550 5.1.1" in str(translate_smtp_reply(550, "5.1.1 <ann@example.org>: unknown"))
    assert "generate" not in str(translate_smtp_reply(451, "could not generate a reply"))
    assert type(translate_smtp_reply(451, "could not generate a reply")) is RetryableError


def test_smtp_url_parsing() -> None:
    target = parse_smtp_url("smtp://user%40bank:p%3Ass@mail.example.com:2525")
    assert (target.host, target.port, target.implicit_tls) == ("mail.example.com", 2525, False)
    assert (target.username, target.password) == ("user@bank", "p:ss")
    assert parse_smtp_url("smtp://mail.example.com").port == 587
    smtps = parse_smtp_url("smtps://mail.example.com")
    assert (smtps.port, smtps.implicit_tls, smtps.username) == (465, True, None)


@pytest.mark.parametrize(
    "url", ["http://mail.example.com", "smtp://", "smtp://user:secret@host:99999", "mail"]
)
def test_bad_smtp_url_is_a_config_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError, match="DELIVERY_SMTP_URL") as caught:
        parse_smtp_url(url)
    assert "secret" not in str(caught.value)


def test_raw_content_json_is_the_json_of_the_request_with_the_data_in_base64() -> None:
    import base64
    import json

    from delivery_server.adapters.aws.ses import raw_content_json

    request = {
        "FromEmailAddress": 'Bänk "Statements" <statements@bank.example.com>',
        "Destination": {"ToAddresses": ["ann@example.org"]},
        "EmailTags": [{"Name": "email_id", "Value": "42"}],
    }
    raw = b"Subject: x\r\n\r\n" + bytes(range(256)) * 10

    body = raw_content_json(request, raw)

    assert json.loads(body) == {
        **request,
        "Content": {"Raw": {"Data": base64.b64encode(raw).decode()}},
    }


_AWKWARD_TEXT = [
    'quote " and backslash \\ and \\"',
    "control \x00\x01\x1f\x7f\t\r\n characters",
    "non-ASCII: Relevé — 日本語 ✓ \U0001f4e7 \u2028\u2029",
    "lone surrogate \ud800 and </script> and \\u0041",
    "",
]


@pytest.mark.parametrize("text", _AWKWARD_TEXT)
@pytest.mark.parametrize("configuration_set", [None, "set-1"])
def test_raw_content_json_is_exactly_what_json_dumps_writes(
    text: str, configuration_set: str | None
) -> None:
    """The spliced body is byte for byte json.dumps's (compact) of the whole request, for
    any text in the other fields."""
    import base64
    import json

    from delivery_server.adapters.aws.ses import raw_content_json

    request: dict[str, object] = {
        "FromEmailAddress": f'"{text}" <statements@bank.example.com>',
        "Destination": {"ToAddresses": [f"{text}@example.org"]},
        "ReplyToAddresses": [text],
        "EmailTags": [{"Name": text, "Value": text}, {"Name": "email_id", "Value": "42"}],
    }
    if configuration_set is not None:
        request["ConfigurationSetName"] = configuration_set
    raw = f"Subject: {text}\r\n\r\n".encode("utf-8", "surrogatepass") + bytes(range(256)) * 400
    whole = {**request, "Content": {"Raw": {"Data": base64.b64encode(raw).decode()}}}

    body = raw_content_json(request, raw)

    assert body == json.dumps(whole, separators=(",", ":")).encode()
    assert json.loads(body) == whole
