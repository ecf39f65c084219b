"""What the operator console reads about a job's emails: filters and rows (plain data).

Pages are keyset pages on the email id (``after``): a page costs the same at the end of a
500,000-email job as at its start, and rows inserted meanwhile neither shift nor repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from delivery_server.models import DeliveryStatus, EmailStatus


@dataclass(frozen=True, slots=True)
class EmailFilter:
    """Which emails of a job: by status, by delivery status, by address prefix."""

    status: EmailStatus | None = None
    delivery_status: DeliveryStatus | None = None
    # Matched case-insensitively as a prefix; LIKE's wildcards in it are taken literally.
    address_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class EmailRow:
    """One email as an operator sees it: its states and errors, not its variables."""

    id: int
    job_id: int
    to_address: str
    status: EmailStatus
    attempts: int
    delivery_status: DeliveryStatus | None = None
    delivery_detail: str | None = None
    last_error: str | None = None
    provider_message_id: str | None = None
    locale: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    sent_at: datetime | None = None
    delivery_updated_at: datetime | None = None
    segments: int | None = None  # the parts its send was billed as (SMS segments)
