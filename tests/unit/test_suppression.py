"""Suppression rules, address normalisation and the one-click unsubscribe token."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta

import pytest

from delivery_server.errors import ConfigError, DeliveryError, InvalidTokenError
from delivery_server.models import Suppression, SuppressionReason
from delivery_server.suppression import (
    TOKEN_LENGTH,
    is_active,
    normalise_address,
    sign_unsubscribe,
    suppression_for,
    unsubscribe_headers,
    verify_unsubscribe,
)
from delivery_server.tracking import parse_event_message
from tests.support import ses_events as ses

SECRET = b"k" * 32


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("  Jane.Doe@Example.COM \n", "jane.doe@example.com"),
        ("JANE@example.com", "jane@example.com"),  # SES's suppression list ignores case too
        ("anna@Bücher.example", "anna@xn--bcher-kva.example"),
        ("o'brien+statements@sub.example.org", "o'brien+statements@sub.example.org"),
        ("strange@exa..mple", "strange@exa..mple"),  # not valid IDNA: kept, lower-cased
        ("ünïcode@bad..dömain", "ünïcode@bad..dömain"),
        ("no-at-sign", "no-at-sign"),
    ],
)
def test_normalise_address(raw: str, normalised: str) -> None:
    assert normalise_address(raw) == normalised


def test_a_permanent_bounce_suppresses_each_bounced_recipient_once() -> None:
    event = ses.bounce_event(recipient="Jane@Example.com")
    first = event["bounce"]["bouncedRecipients"][0]
    event["bounce"]["bouncedRecipients"] += [dict(first, emailAddress="jane@example.COM")]
    event["bounce"]["bouncedRecipients"] += [dict(first, emailAddress="mary@example.com")]

    entries = suppression_for(parse_event_message(ses.raw_message(event)))

    assert entries == [
        ("jane@example.com", SuppressionReason.HARD_BOUNCE),
        ("mary@example.com", SuppressionReason.HARD_BOUNCE),
    ]


def test_a_complaint_suppresses_the_complainer() -> None:
    event = parse_event_message(ses.sns_envelope(ses.complaint_event(recipient="Bob@x.org")))

    assert suppression_for(event) == [("bob@x.org", SuppressionReason.COMPLAINT)]


@pytest.mark.parametrize(
    "event",
    [
        ses.bounce_event(bounce_type="Transient"),
        ses.bounce_event(bounce_type="Undetermined"),
        ses.delivery_event(),
        ses.delivery_delay_event(),
        ses.send_event(),
        ses.reject_event(),
        ses.open_event(),
        ses.click_event(),
    ],
)
def test_nothing_else_suppresses(event: ses.Event) -> None:
    assert suppression_for(parse_event_message(ses.raw_message(event))) == []


def test_an_entry_is_active_until_it_expires() -> None:
    now = datetime(2026, 1, 1, 12, 0)
    forever = Suppression("a@x.org", SuppressionReason.MANUAL)
    later = Suppression("a@x.org", SuppressionReason.MANUAL, expires_at=now + timedelta(days=1))
    expired = Suppression("a@x.org", SuppressionReason.MANUAL, expires_at=now)

    assert is_active(forever, now)
    assert is_active(later, now)
    assert not is_active(expired, now)


def test_a_token_carries_the_email_id_and_no_address() -> None:
    token = sign_unsubscribe(123456, SECRET)

    assert verify_unsubscribe(token, SECRET) == 123456
    assert len(token) == TOKEN_LENGTH
    assert "=" not in token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert verify_unsubscribe(sign_unsubscribe(2**63, SECRET), SECRET) == 2**63


def test_tokens_differ_per_email_and_per_secret() -> None:
    assert sign_unsubscribe(1, SECRET) != sign_unsubscribe(2, SECRET)
    assert sign_unsubscribe(1, SECRET) != sign_unsubscribe(1, b"o" * 32)


def _flip(token: str, index: int) -> str:
    replacement = "A" if token[index] != "A" else "B"
    return token[:index] + replacement + token[index + 1 :]


def _forged(email_id: int) -> str:
    # The right shape, an id of the attacker's choice, a signature made up.
    raw = bytes([1]) + email_id.to_bytes(8, "big") + bytes(32)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (sign_unsubscribe(7, b"another secret of 32 bytes......"), "signature does not match"),
        (_flip(sign_unsubscribe(7, SECRET), 3), "signature does not match"),  # the id changed
        (_flip(sign_unsubscribe(7, SECRET), 30), "signature does not match"),  # the mac changed
        (_forged(7), "signature does not match"),
        (sign_unsubscribe(7, SECRET)[:-1], "wrong length"),
        (sign_unsubscribe(7, SECRET) + "A", "wrong length"),
        ("", "wrong length"),
        ("!" * TOKEN_LENGTH, "not url-safe base64"),
        ("é" * TOKEN_LENGTH, "wrong length"),
    ],
)
def test_a_malformed_or_forged_token_is_refused(token: str, message: str) -> None:
    with pytest.raises(InvalidTokenError, match=message) as caught:
        verify_unsubscribe(token, SECRET)
    assert isinstance(caught.value, DeliveryError)


def test_another_encoding_of_a_valid_token_is_refused() -> None:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    token = sign_unsubscribe(7, SECRET)
    # The last character holds 2 unused bits: its twin decodes to the same bytes.
    twin = token[:-1] + alphabet[alphabet.index(token[-1]) ^ 1]
    # The standard alphabet's "+" and "/" decode like "-" and "_".
    dashed = next(t for i in range(1, 500) if "-" in (t := sign_unsubscribe(i, SECRET)))

    for other in (twin, dashed.replace("-", "+")):
        with pytest.raises(InvalidTokenError, match="canonical"):
            verify_unsubscribe(other, SECRET)


def test_an_empty_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="DELIVERY_UNSUBSCRIBE_SECRET"):
        sign_unsubscribe(1, b"")
    with pytest.raises(ConfigError, match="DELIVERY_UNSUBSCRIBE_SECRET"):
        verify_unsubscribe(sign_unsubscribe(1, SECRET), b"")


@pytest.mark.parametrize("email_id", [0, -1, 2**64])
def test_only_positive_64_bit_ids_are_signed(email_id: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        sign_unsubscribe(email_id, SECRET)


def test_one_click_headers_follow_rfc_8058() -> None:
    url = "https://mail.example.com/unsubscribe/" + sign_unsubscribe(9, SECRET)

    assert unsubscribe_headers(url) == {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


@pytest.mark.parametrize(
    "url",
    [
        "https://x.example/u/t\r\nBcc: victim@example.com",
        "https://x.example/u/t>, <mailto:a@b",
        "https://x.example/u/ t",
        "ftp://x.example/u/t",
        "/unsubscribe/t",
    ],
)
def test_an_unsafe_unsubscribe_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="unsubscribe URL"):
        unsubscribe_headers(url)
