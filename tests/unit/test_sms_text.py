"""SMS text rules: E.164 numbers, GSM-7 or UCS-2, segments and the cap (sms.py)."""

from __future__ import annotations

import pytest

from delivery_server.errors import PermanentError
from delivery_server.sms import (
    MAX_SMS_BYTES,
    SmsEncoding,
    check_sms_body,
    count_segments,
    is_gsm7,
    normalize_phone,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("+14155550100", "+14155550100"),
        ("  +4915112345678 ", "+4915112345678"),
        ("+447911123456", "+447911123456"),
        ("+33612345678", "+33612345678"),
    ],
)
def test_valid_numbers_come_back_in_e164(given: str, expected: str) -> None:
    assert normalize_phone(given) == expected


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("14155550100", "E.164 form"),  # no '+'
        ("+1 415 555 0100", "E.164 form"),  # formatting is not E.164
        ("+1-415-555-0100", "E.164 form"),
        ("+", "E.164 form"),
        ("+٤١٥٥٥٥٠١٠٠١", "E.164 form"),  # Arabic-Indic digits are digits, not ASCII
        ("+1415555", "8 to 15 digits"),
        ("+1234567890123456", "8 to 15 digits"),
        ("+99912345678", "country calling code"),  # 999 is no country's code
        ("+1415555", "not 7"),
        ("+447700900123", "not a valid number"),  # Ofcom's drama range: never assigned
        ("ann@example.org", "E.164 form"),
    ],
)
def test_invalid_numbers_are_refused_without_quoting_them(given: str, reason: str) -> None:
    with pytest.raises(PermanentError) as caught:
        normalize_phone(given)
    assert reason in str(caught.value)
    digits = given.strip().lstrip("+")
    assert len(digits) < 5 or digits not in str(caught.value)


def test_gsm7_is_the_basic_set_and_its_extension() -> None:
    assert is_gsm7("Hello @ £5, Ä ö ñ ü à ¿¡ §\n\r")
    assert is_gsm7("€ [ ] { } | ^ ~ \\ \f")
    assert not is_gsm7("ç")  # only capital Ç is in the table
    assert not is_gsm7("Привет")
    assert not is_gsm7("ok 👍")
    assert not is_gsm7("\x1b")  # the escape on its own is no character


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("a", SmsEncoding.GSM_7, 1, 1),
        ("a" * 160, SmsEncoding.GSM_7, 160, 1),
        ("a" * 161, SmsEncoding.GSM_7, 161, 2),
        ("a" * 306, SmsEncoding.GSM_7, 306, 2),
        ("a" * 307, SmsEncoding.GSM_7, 307, 3),
        ("€" * 80, SmsEncoding.GSM_7, 160, 1),  # extension characters count two
        ("€" * 81, SmsEncoding.GSM_7, 162, 2),
        # 152 + an extension character: the escape pair is not split, a third part starts
        ("a" * 152 + "€" + "a" * 152, SmsEncoding.GSM_7, 306, 3),
        ("a" * 151 + "€" + "a" * 153, SmsEncoding.GSM_7, 306, 2),
        ("é" * 70, SmsEncoding.GSM_7, 70, 1),  # é is in the GSM table
        ("ç" * 70, SmsEncoding.UCS_2, 70, 1),
        ("ç" * 71, SmsEncoding.UCS_2, 71, 2),
        ("ç" * 134, SmsEncoding.UCS_2, 134, 2),
        ("ç" * 135, SmsEncoding.UCS_2, 135, 3),
        ("👍" * 35, SmsEncoding.UCS_2, 70, 1),  # outside the BMP: two UTF-16 units
        ("👍" * 36, SmsEncoding.UCS_2, 72, 2),
        # 66 units + a surrogate pair: the pair is not split, a third part starts
        ("ç" * 66 + "👍" + "ç" * 66, SmsEncoding.UCS_2, 134, 3),
        ("a" * 159 + "ç", SmsEncoding.UCS_2, 160, 3),  # one character makes it all UCS-2
    ],
)
def test_segments(text: str, encoding: SmsEncoding, units: int, segments: int) -> None:
    counted = count_segments(text)
    assert (counted.encoding, counted.units, counted.segments) == (encoding, units, segments)


def test_describe_names_count_and_encoding() -> None:
    assert count_segments("a").describe() == "1 segment (GSM-7)"
    assert count_segments("ç" * 71).describe() == "2 segments (UCS-2)"


def test_check_allows_up_to_the_cap() -> None:
    assert check_sms_body("a" * 306, max_segments=2).segments == 2
    with pytest.raises(PermanentError, match=r"3 segments \(GSM-7\), over the job's cap of 2"):
        check_sms_body("a" * 307, max_segments=2)


def test_check_refuses_empty_bodies() -> None:
    with pytest.raises(PermanentError, match="empty"):
        check_sms_body(" \n", max_segments=10)


def test_check_refuses_what_sns_would_refuse() -> None:
    # 1600 bytes: 1828 septets fit in GSM-7, 800 units in UCS-2.
    assert check_sms_body("a" * 1828, max_segments=100).encoded_bytes == MAX_SMS_BYTES
    with pytest.raises(PermanentError, match="over SNS's 1600-byte limit"):
        check_sms_body("a" * 1829, max_segments=100)
    assert check_sms_body("ç" * 800, max_segments=100).encoded_bytes == MAX_SMS_BYTES
    with pytest.raises(PermanentError, match="1602 bytes in UCS-2"):
        check_sms_body("ç" * 801, max_segments=100)


def test_a_ten_megabyte_body_is_refused_without_quoting_it() -> None:
    body = "secret " * (10 * 1024 * 1024 // 7)
    with pytest.raises(PermanentError) as caught:
        check_sms_body(body, max_segments=10)
    assert "over SNS's 1600-byte limit" in str(caught.value)
    assert "secret" not in str(caught.value)
