"""Records of looking a job's emails over: pre-flight's reads and its audit trail, the
emails found by address (``jobs find``), and the classes failures are grouped by
(``jobs show``). Plain data and pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from delivery_server.email_listing import EmailRow
from delivery_server.models import JobStatus


@dataclass(frozen=True, slots=True)
class StoredRecipient:
    """An email's recipient fields as stored, unchecked (upstream systems write these
    rows): what pre-flight reads of a job."""

    id: int
    to_address: str
    locale: str | None
    variables: Any  # a JSON object when well-formed
    attachments: Any  # a JSON list of attachment objects, or None


@dataclass(frozen=True, slots=True)
class AttachmentDigest:
    """What pre-flight read of one attachment of an email: the audit trail's record."""

    email_id: int
    number: int  # its place in the email's attachments, the first is 1
    size: int  # bytes
    sha256: str  # hex


@dataclass(frozen=True, slots=True)
class FoundEmail:
    """An email that went (or is to go) to the address looked for, with its job."""

    email: EmailRow
    job_name: str
    job_status: JobStatus


# Provider errors sometimes quote the recipient ("550 <ann@example.com>: no such user").
_ADDRESS = re.compile(r"<?[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+>?")
# Long numbers and hex runs are ids (request ids, message ids, queue ids), not the error.
_ID = re.compile(r"\b(?:\d{5,}|[0-9a-f]{8,}(?:-[0-9a-f]{4,})*)\b", re.IGNORECASE)
ERROR_CLASS_CHARS = 200


def error_class(error: str) -> str:
    """The class a ``last_error`` is counted under: its first line with addresses and
    ids replaced, so that "550 <ann@x>: no such user" and "550 <bob@y>: no such user"
    are one class; SMTP codes and the causes our own errors name are kept."""
    first = error.strip().splitlines()[0] if error.strip() else ""
    text = _ID.sub("<id>", _ADDRESS.sub("<address>", first))
    return " ".join(text.split())[:ERROR_CLASS_CHARS] or "(empty)"


# ``jobs export``: one row per email, in id order (the API's CSV may share these).
EXPORT_COLUMNS = (
    "email_id",
    "job_id",
    "to_address",
    "locale",
    "status",
    "delivery_status",
    "delivery_detail",
    "attempts",
    "last_error",
    "provider_message_id",
    "created_at",
    "updated_at",
    "sent_at",
    "delivery_updated_at",
    # The parts its send was billed as (an SMS's segments); empty for other channels.
    "segments",
)
# A cell starting with one of these is a formula to a spreadsheet (CSV injection):
# addresses and provider errors are outside data, and exports are opened in Excel.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def export_row(row: EmailRow) -> list[str]:
    """The cells of one email for ``EXPORT_COLUMNS``: times ISO 8601 UTC (``Z``), empty
    for none; text that a spreadsheet would run as a formula gets a leading ``'``."""
    values: list[object] = [
        row.id,
        row.job_id,
        row.to_address,
        row.locale,
        row.status,
        row.delivery_status,
        row.delivery_detail,
        row.attempts,
        row.last_error,
        row.provider_message_id,
        row.created_at,
        row.updated_at,
        row.sent_at,
        row.delivery_updated_at,
        row.segments,
    ]
    return [_cell(value) for value in values]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat() + "Z"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text
