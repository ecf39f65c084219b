"""SES v2 over REST JSON: ``POST /v2/email/outbound-emails`` and ``GET /v2/email/account``.

Accepted emails are counted, and the most recent ones kept (a bounded log: a 500,000-email
benchmark must not grow the simulator without bound). An ``email_id`` email tag, when the
client sets one, is remembered so that a test or benchmark can count duplicate sends.

Errors use the rest-json shape botocore reads: the HTTP status, an ``x-amzn-ErrorType``
header with the error code, and ``{"message": ...}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any

from aiohttp import web

from stand_in.faults import SES_ERRORS, FaultPlan

Payload = dict[str, Any]
_HEADERS_ONLY = BytesHeaderParser()


class SesError(Exception):
    """An SES v2 error answer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def response(self) -> web.Response:
        return web.json_response(
            {"message": self.message},
            status=SES_ERRORS.get(self.code, 400),
            headers={"x-amzn-ErrorType": self.code},
        )


@dataclass(frozen=True, slots=True)
class SentEmail:
    """What the simulator remembers of one accepted email."""

    message_id: str
    from_address: str
    to: tuple[str, ...]
    subject: str
    kind: str  # "simple" or "raw"
    size: int  # raw message bytes, or text + html characters for simple content
    attachments: int
    tags: dict[str, str]
    accepted_at: float


@dataclass(slots=True)
class SentLog:
    """Every accepted email counted; the last ``keep`` of them kept in full."""

    keep: int = 10_000
    count: int = 0
    duplicates: int = 0
    # Wall-clock (time.time) of the first and the latest accepted send: a benchmark's
    # "time to first send" and its last send, whatever ``keep`` dropped since.
    first_accepted_at: float | None = None
    last_accepted_at: float | None = None
    records: deque[SentEmail] = field(default_factory=deque)
    _email_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.records = deque(maxlen=self.keep)

    def add(self, email: SentEmail) -> None:
        self.count += 1
        if self.first_accepted_at is None:
            self.first_accepted_at = email.accepted_at
        self.last_accepted_at = email.accepted_at
        self.records.append(email)
        email_id = email.tags.get("email_id")
        if email_id is not None:
            if email_id in self._email_ids:
                self.duplicates += 1
            else:
                self._email_ids.add(email_id)

    def clear(self) -> None:
        self.count = self.duplicates = 0
        self.first_accepted_at = self.last_accepted_at = None
        self.records.clear()
        self._email_ids.clear()

    def to_json(self, with_emails: bool, limit: int) -> Payload:
        out: Payload = {
            "count": self.count,
            "duplicates": self.duplicates,
            "first_accepted_at": self.first_accepted_at,
            "last_accepted_at": self.last_accepted_at,
        }
        if with_emails:
            recent = list(self.records)[-limit:] if limit > 0 else []
            out["emails"] = [asdict(email) for email in recent]
        return out


def _recipients(destination: Any) -> list[str]:
    if not isinstance(destination, dict):
        return []
    found: list[str] = []
    for key in ("ToAddresses", "CcAddresses", "BccAddresses"):
        found.extend(str(a) for a in destination.get(key) or ())
    return found


def _simple(payload: Payload, content: Payload, recipients: list[str]) -> SentEmail:
    subject = (content.get("Subject") or {}).get("Data")
    body = content.get("Body") or {}
    text = (body.get("Text") or {}).get("Data") or ""
    html = (body.get("Html") or {}).get("Data") or ""
    if subject is None or not (text or html):
        raise SesError("BadRequestException", "Simple content needs a Subject and a Body.")
    if not payload.get("FromEmailAddress"):
        raise SesError("BadRequestException", "FromEmailAddress is required.")
    if not recipients:
        raise SesError("BadRequestException", "Destination has no recipients.")
    return SentEmail(
        message_id="",
        from_address=str(payload["FromEmailAddress"]),
        to=tuple(recipients),
        subject=str(subject),
        kind="simple",
        size=len(text) + len(html),
        attachments=len(content.get("Attachments") or ()),
        tags={},
        accepted_at=0.0,
    )


def _raw(payload: Payload, content: Payload, recipients: list[str]) -> SentEmail:
    try:
        data = base64.b64decode(content.get("Data") or "", validate=True)
    except (binascii.Error, ValueError):
        raise SesError("BadRequestException", "Raw Data is not base64.") from None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    if end < 0:
        raise SesError("MessageRejected", "Illegal content: no blank line after the headers.")
    # Only the header block is parsed: the body (a 100 KB PDF, say) needs no look.
    headers = _HEADERS_ONLY.parsebytes(data[:end])
    if not recipients:
        recipients = [addr for _, addr in getaddresses(headers.get_all("To") or []) if addr]
    if not recipients:
        raise SesError("BadRequestException", "No recipients in Destination or To header.")
    sender = payload.get("FromEmailAddress") or headers.get("From")
    if not sender:
        raise SesError("BadRequestException", "No sender in FromEmailAddress or From header.")
    subject = headers.get("Subject") or ""
    return SentEmail(
        message_id="",
        from_address=str(sender),
        to=tuple(recipients),
        subject=str(make_header(decode_header(subject))) if "=?" in subject else subject,
        kind="raw",
        size=len(data),
        attachments=data.count(b"Content-Disposition: attachment"),
        tags={},
        accepted_at=0.0,
    )


class SesApi:
    """The simulated SES v2 account: sends, the account's quota, faults, the sent log."""

    def __init__(self, faults: FaultPlan, keep: int = 10_000) -> None:
        self.faults = faults
        self.sent = SentLog(keep=keep)
        self.calls: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:8]
        # Told of every accepted email with its configuration set (event publishing).
        self.on_accepted: Callable[[SentEmail, str | None], None] | None = None

    async def send_email(self, request: web.Request) -> web.Response:
        """``SendEmail``: validate, apply faults and latency, record, answer a MessageId."""
        self.calls["SendEmail"] += 1
        try:
            payload = json.loads(await request.read())
            email = self._parse(payload)
        except SesError as exc:
            return exc.response()
        except (ValueError, TypeError, AttributeError) as exc:
            return SesError("BadRequestException", f"Malformed request: {exc}").response()
        error = self.faults.pick_error(list(email.to))
        if self.faults.latency > 0:
            await asyncio.sleep(self.faults.latency)
        if error is not None and error != "drop":
            self.calls[f"SendEmail:{error}"] += 1
            return SesError(error, f"Simulated {error}").response()
        message_id = f"{self._id_prefix}-{next(self._ids):012d}-000000"
        tags = {
            str(t.get("Name")): str(t.get("Value"))
            for t in payload.get("EmailTags") or ()
            if isinstance(t, dict)
        }
        accepted = SentEmail(
            message_id=message_id,
            from_address=email.from_address,
            to=email.to,
            subject=email.subject,
            kind=email.kind,
            size=email.size,
            attachments=email.attachments,
            tags=tags,
            accepted_at=time.time(),
        )
        self.sent.add(accepted)
        if self.on_accepted is not None:
            configuration_set = payload.get("ConfigurationSetName")
            self.on_accepted(accepted, str(configuration_set) if configuration_set else None)
        if error == "drop":
            self.calls["SendEmail:drop"] += 1
            if request.transport is not None:
                request.transport.abort()
            # aiohttp drops an answer to a closed connection without complaint.
            return web.Response(status=204)
        return web.json_response({"MessageId": message_id})

    async def get_account(self, request: web.Request) -> web.Response:
        """``GetAccount``: the send quota (``MaxSendRate`` is what clients pace on)."""
        self.calls["GetAccount"] += 1
        return web.json_response(
            {
                "DedicatedIpAutoWarmupEnabled": False,
                "EnforcementStatus": "HEALTHY",
                "ProductionAccessEnabled": True,
                "SendingEnabled": True,
                "SendQuota": {
                    "Max24HourSend": -1.0,
                    "MaxSendRate": self.faults.max_send_rate,
                    "SentLast24Hours": float(self.sent.count),
                },
            }
        )

    @staticmethod
    def _parse(payload: Any) -> SentEmail:
        if not isinstance(payload, dict):
            raise SesError("BadRequestException", "The request body must be a JSON object.")
        content = payload.get("Content")
        if not isinstance(content, dict):
            raise SesError("BadRequestException", "Content is required.")
        recipients = _recipients(payload.get("Destination"))
        if isinstance(content.get("Simple"), dict):
            return _simple(payload, content["Simple"], recipients)
        if isinstance(content.get("Raw"), dict):
            return _raw(payload, content["Raw"], recipients)
        raise SesError("BadRequestException", "Content needs Simple or Raw (Template: no).")
