"""SMS text rules (pure): E.164 phone numbers, GSM-7 or UCS-2, and segments.

A phone number is checked at import and again at the claim, by the same function: ``+``
and 8 to 15 digits (E.164), then a number that can exist in its country's numbering plan
(Google's libphonenumber rules, as ``phonenumbers``). Errors never quote the number.

The body is sent by SNS in one of two encodings, and a long one in several segments,
each billed as one SMS:

==========  ================  ===================  =====================================
encoding    when              one message          per part of a longer one
==========  ================  ===================  =====================================
GSM-7       every character   160 septets          153 (the rest is the concatenation
            is in GSM 03.38                        header); an extension character
                                                   (``€ [ ] { } | ^ ~ \\`` and form feed)
                                                   takes two, never split across parts
UCS-2       any other         70 UTF-16 units      67; a character outside the BMP (an
                                                   emoji) takes two, never split
==========  ================  ===================  =====================================

SNS takes at most 1600 bytes per ``Publish`` (a septet is 7 bits, a UTF-16 unit 2 bytes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from delivery_server.errors import PermanentError

# GSM 03.38 basic character set, in table order (0x1B, the escape, is left out: it only
# ever introduces an extension character).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each is sent as the escape plus one septet.
_GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67
# SNS refuses a Publish whose SMS body is over this.
MAX_SMS_BYTES = 1600
# Longer than this cannot fit in MAX_SMS_BYTES in either encoding: refused before the
# text is looked at character by character (a 10 MB body costs nothing to refuse).
_MAX_SMS_CHARS = MAX_SMS_BYTES * 8 // 7

E164_MIN_DIGITS, E164_MAX_DIGITS = 8, 15
# A job's cap on segments per SMS (``jobs create --max-segments``) is within these.
MIN_SEGMENT_CAP, MAX_SEGMENT_CAP = 1, 12


class SmsEncoding(StrEnum):
    """How SNS will encode a body."""

    GSM_7 = "gsm-7"
    UCS_2 = "ucs-2"


@dataclass(frozen=True, slots=True)
class SmsSegments:
    """What a body costs: its encoding, its length in that encoding's units (septets or
    UTF-16 code units) and how many segments (billed messages) it is sent as."""

    encoding: SmsEncoding
    units: int
    segments: int

    @property
    def encoded_bytes(self) -> int:
        """Its size as SNS counts it against ``MAX_SMS_BYTES``."""
        if self.encoding is SmsEncoding.GSM_7:
            return math.ceil(self.units * 7 / 8)
        return self.units * 2

    def describe(self) -> str:
        """``"2 segments (GSM-7)"``: for errors and the send record, no text quoted."""
        plural = "" if self.segments == 1 else "s"
        return f"{self.segments} segment{plural} ({self.encoding.value.upper()})"


def normalize_phone(value: str) -> str:
    """The E.164 form of a recipient's phone number; ``PermanentError`` naming what is
    wrong (never the number) when it is not one.

    Only the E.164 form itself is taken (``+`` then the digits; surrounding white space
    is ignored): a national form such as ``0171 …`` would need a country to guess."""
    text = value.strip()
    digits = text[1:]
    if not text.startswith("+") or not digits.isascii() or not digits.isdigit():
        raise PermanentError("phone number must be in E.164 form: '+' and digits only")
    if not E164_MIN_DIGITS <= len(digits) <= E164_MAX_DIGITS:
        raise PermanentError(
            f"phone number must have {E164_MIN_DIGITS} to {E164_MAX_DIGITS} digits after"
            f" '+' (E.164), not {len(digits)}"
        )
    # Here, not at the top: the CLI reads this module's limits in every command, and the
    # numbering plans are only needed once an SMS is checked.
    import phonenumbers

    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise PermanentError("phone number has no valid country calling code") from None
    if not phonenumbers.is_valid_number(parsed):
        raise PermanentError("phone number is not a valid number for its country code")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def is_gsm7(text: str) -> bool:
    """Whether every character of ``text`` is in GSM 03.38 (basic or extension)."""
    return all(ch in _GSM_BASIC or ch in _GSM_EXTENSION for ch in text)


def count_segments(text: str) -> SmsSegments:
    """The encoding SNS will use for ``text`` and the segments it is sent as."""
    if is_gsm7(text):
        costs = [2 if ch in _GSM_EXTENSION else 1 for ch in text]
        return SmsSegments(SmsEncoding.GSM_7, sum(costs), _fill(costs, GSM7_SINGLE, GSM7_PART))
    costs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return SmsSegments(SmsEncoding.UCS_2, sum(costs), _fill(costs, UCS2_SINGLE, UCS2_PART))


def _fill(costs: list[int], single: int, part: int) -> int:
    """Segments for characters of these costs: one if all fit in ``single``, else parts
    of ``part`` units filled in order, a two-unit character never split across two."""
    total = sum(costs)
    if total <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > part:
            segments, used = segments + 1, 0
        used += cost
    return segments


@dataclass(frozen=True, slots=True)
class SegmentCap:
    """The most segments one SMS of a job may take, and where that figure comes from."""

    segments: int
    source: str  # "--max-segments" or "DELIVERY_SMS_MAX_SEGMENTS", for the error


def job_segment_cap(job_cap: int | None, setting: int) -> SegmentCap:
    """The cap an sms job's bodies are held to: its own, else the setting's.
    ``PermanentError`` for a job cap out of range (rows may be written by upstream
    systems, not only by ``jobs create``)."""
    if job_cap is None:
        return SegmentCap(setting, "DELIVERY_SMS_MAX_SEGMENTS")
    if not MIN_SEGMENT_CAP <= job_cap <= MAX_SEGMENT_CAP:
        raise PermanentError(
            f"the job's max_segments is {job_cap}, not {MIN_SEGMENT_CAP} to {MAX_SEGMENT_CAP}"
        )
    return SegmentCap(job_cap, "--max-segments")


def check_sms_body(text: str, max_segments: SegmentCap | int) -> SmsSegments:
    """The segments of a rendered body that may be sent; ``PermanentError`` (saying
    why, never quoting the text) when it is empty, over SNS's size or over the cap (a
    bare number is taken for the setting's)."""
    cap = (
        max_segments
        if isinstance(max_segments, SegmentCap)
        else SegmentCap(max_segments, "DELIVERY_SMS_MAX_SEGMENTS")
    )
    if not text.strip():
        raise PermanentError("SMS body is empty")
    if len(text) > _MAX_SMS_CHARS:
        raise PermanentError(
            f"SMS body is {len(text)} characters, over SNS's {MAX_SMS_BYTES}-byte limit"
        )
    counted = count_segments(text)
    if counted.encoded_bytes > MAX_SMS_BYTES:
        raise PermanentError(
            f"SMS body is {counted.encoded_bytes} bytes in {counted.encoding.value.upper()},"
            f" over SNS's {MAX_SMS_BYTES}-byte limit"
        )
    if counted.segments > cap.segments:
        raise PermanentError(
            f"SMS body is {counted.describe()}, over the job's cap of {cap.segments} ({cap.source})"
        )
    return counted


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    """One rendered SMS, checked: an E.164 number, a body within SNS's size and the job's
    cap, and what it costs. The sender sends it as it is; embedded mode writes it to the
    outbox as ``<job_id>-<email_id>.sms.json`` (``channels.OutboxForm``)."""

    job_id: int
    email_id: int
    phone: str
    body: str
    segments: SmsSegments

    @property
    def outbox_stem(self) -> str:
        return f"{self.job_id}-{self.email_id}"

    def outbox_files(self) -> Sequence[tuple[str, bytes]]:
        document = {
            "job_id": self.job_id,
            "email_id": self.email_id,
            "phone": self.phone,
            "body": self.body,
            "encoding": self.segments.encoding.value,
            "segments": self.segments.segments,
        }
        return ((".sms.json", json.dumps(document, ensure_ascii=False, indent=2).encode()),)
