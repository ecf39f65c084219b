"""Our SigV4 signer against botocore's ``SigV4Auth``: the same headers, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from delivery_server.adapters.aws.sigv4 import SigV4Signer

pytestmark = pytest.mark.timeout(10)

NOW = datetime(2026, 11, 26, 13, 45, 7, tzinfo=UTC)
KEYS = ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None)
SESSION = ReadOnlyCredentials("ASIAEXAMPLE", "c2VjcmV0/secret+key", "FwoGZXIvYXdzE//token==")
JSON_HEADERS = {"Content-Type": "application/json", "User-Agent": "Botocore/1.43 x/1"}
SQS_HEADERS = {
    "X-Amz-Target": "AmazonSQS.ReceiveMessage",
    "Content-Type": "application/x-amz-json-1.0",
    "x-amzn-query-mode": "true",
    "User-Agent": "Botocore/1.43 delivery-server/0.1",
}


# What an HTTP client sends as Host for each URL below: no default port, lower case.
HOSTS = {
    "https://email.us-east-1.amazonaws.com/v2/email/outbound-emails": (
        "email.us-east-1.amazonaws.com"
    ),
    "https://email.eu-west-1.amazonaws.com:443/v2/email/outbound-emails": (
        "email.eu-west-1.amazonaws.com"
    ),
    "https://sqs.eu-west-1.amazonaws.com/": "sqs.eu-west-1.amazonaws.com",
    "http://127.0.0.1:4566/": "127.0.0.1:4566",
    "http://LocalHost:80": "localhost",
    "http://[::1]:5000/v2/email/outbound-emails": "[::1]:5000",
    "https://vpce-1.email.example/v2//email/./outbound-emails": "vpce-1.email.example",
}


def botocore_headers(
    credentials: ReadOnlyCredentials,
    service: str,
    region: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: NOW.replace(tzinfo=None))
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(credentials, service, region).add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize(
    ("service", "region", "url", "headers", "credentials"),
    [
        (
            "ses",
            "us-east-1",
            "https://email.us-east-1.amazonaws.com/v2/email/outbound-emails",
            JSON_HEADERS,
            KEYS,
        ),
        (
            "ses",
            "eu-west-1",
            "https://email.eu-west-1.amazonaws.com:443/v2/email/outbound-emails",
            JSON_HEADERS,
            SESSION,
        ),
        ("sqs", "eu-west-1", "https://sqs.eu-west-1.amazonaws.com/", SQS_HEADERS, SESSION),
        ("sqs", "us-east-1", "http://127.0.0.1:4566/", SQS_HEADERS, KEYS),
        ("sqs", "us-east-1", "http://LocalHost:80", SQS_HEADERS, KEYS),
        ("ses", "us-east-1", "http://[::1]:5000/v2/email/outbound-emails", JSON_HEADERS, KEYS),
        (
            "ses",
            "us-east-1",
            "https://vpce-1.email.example/v2//email/./outbound-emails",
            {"Content-Type": "  application/json ", "X-Custom": "a   b\tc"},
            SESSION,
        ),
    ],
)
@pytest.mark.parametrize("body", [b"", b'{"a":"\xc3\xa9"}', b"x" * 100_000])
def test_signs_exactly_as_botocore(
    monkeypatch: pytest.MonkeyPatch,
    service: str,
    region: str,
    url: str,
    headers: dict[str, str],
    credentials: ReadOnlyCredentials,
    body: bytes,
) -> None:
    expected = botocore_headers(credentials, service, region, url, headers, body, monkeypatch)

    ours = SigV4Signer(service, region).sign(credentials, url, headers, body, now=NOW)

    # botocore leaves the Host header to the HTTP client (and signs it as derived here).
    assert ours.pop("Host") == HOSTS[url]
    assert ours == expected


def test_the_signing_key_follows_the_day_and_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = SigV4Signer("ses", "us-east-1")
    url = "https://email.us-east-1.amazonaws.com/v2/email/outbound-emails"
    for now in (NOW, NOW.replace(day=27), NOW.replace(day=27, hour=23)):
        for credentials in (KEYS, SESSION, KEYS):
            monkeypatch.setattr(
                "botocore.auth.get_current_datetime", lambda now=now: now.replace(tzinfo=None)
            )
            request = AWSRequest(method="POST", url=url, data=b"{}", headers=JSON_HEADERS)
            SigV4Auth(credentials, "ses", "us-east-1").add_auth(request)
            ours = signer.sign(credentials, url, JSON_HEADERS, b"{}", now=now)
            assert ours["Authorization"] == request.headers["Authorization"]


def test_urls_with_a_query_string_are_refused() -> None:
    with pytest.raises(ValueError, match="query string"):
        SigV4Signer("sqs", "us-east-1").sign(KEYS, "https://sqs.example/?Action=X", {}, b"")


def test_missing_keys_are_no_credentials() -> None:
    from botocore.exceptions import NoCredentialsError

    half = ReadOnlyCredentials("AKIDEXAMPLE", None, None)
    with pytest.raises(NoCredentialsError):
        SigV4Signer("ses", "us-east-1").sign(half, "https://email.example/v2", {}, b"")


def test_without_now_the_stamp_is_the_clocks_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stamp of the current second is kept, and follows the clock into the next one."""
    signer = SigV4Signer("sqs", "us-east-1")
    url = "http://127.0.0.1:4566/"
    epoch = NOW.timestamp()
    for offset, credentials in [(0.0, KEYS), (0.4, SESSION), (0.999, KEYS), (1.0, SESSION)]:
        at = datetime.fromtimestamp(int(epoch + offset), UTC)
        monkeypatch.setattr("time.time", lambda offset=offset: epoch + offset)
        ours = signer.sign(credentials, url, SQS_HEADERS, b"{}")
        assert ours["X-Amz-Date"] == at.strftime("%Y%m%dT%H%M%SZ")
        # Signed with that time, as test_signs_exactly_as_botocore checks against botocore.
        assert ours == SigV4Signer("sqs", "us-east-1").sign(
            credentials, url, SQS_HEADERS, b"{}", now=at
        )


@pytest.mark.parametrize(
    "extra",
    [{"host": "other.example"}, {"X-AMZ-DATE": "19990101T000000Z"}, {"x-amz-security-token": "t"}],
)
@pytest.mark.parametrize("credentials", [KEYS, SESSION])
def test_a_header_the_signer_sets_itself_is_signed_as_before(
    extra: dict[str, str], credentials: ReadOnlyCredentials
) -> None:
    """Header sets naming Host, X-Amz-Date or the token take the general path, whose
    result is the one of the step-by-step algorithm (the caller's value kept beside ours)."""
    import hashlib
    import hmac

    url = "https://email.us-east-1.amazonaws.com/v2/email/outbound-emails"
    headers = {**JSON_HEADERS, **extra}
    ours = SigV4Signer("ses", "us-east-1").sign(credentials, url, headers, b"{}", now=NOW)

    stamp = NOW.strftime("%Y%m%dT%H%M%SZ")
    signed = {**headers, "Host": "email.us-east-1.amazonaws.com", "X-Amz-Date": stamp}
    if credentials.token:
        signed["X-Amz-Security-Token"] = credentials.token
    canonical = {k.lower(): v for k, v in signed.items() if k.lower() != "user-agent"}
    names = sorted(canonical)
    request = "\n".join(
        [
            "POST",
            "/v2/email/outbound-emails",
            "",
            *(f"{name}:{canonical[name]}" for name in names),
            "",
            ";".join(names),
            hashlib.sha256(b"{}").hexdigest(),
        ]
    )
    scope = f"{stamp[:8]}/us-east-1/ses/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
    key = f"AWS4{credentials.secret_key}".encode()
    for part in (stamp[:8], "us-east-1", "ses", "aws4_request"):
        key = hmac.new(key, part.encode(), "sha256").digest()
    signature = hmac.new(key, to_sign.encode(), "sha256").hexdigest()
    assert ours == {
        **signed,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}",
    }
