"""The API's requests and answers about templates, suppressions and the audit trail."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from delivery_server.api_tokens import AuditEntry
from delivery_server.http.api.models import (
    MAX_ID,
    Answer,
    Id,
    Request,
    RequestTime,
    UtcTime,
)
from delivery_server.models import Suppression, SuppressionReason, Template

MAX_ADDRESSES = 1000


class TemplateOut(Answer):
    name: str
    locale: str
    version: int
    subject: str
    has_html: bool
    created_at: UtcTime | None

    @classmethod
    def of(cls, template: Template) -> TemplateOut:
        return cls(
            name=template.name,
            locale=template.locale,
            version=template.version,
            subject=template.subject,
            has_html=template.html_body is not None,
            created_at=template.created_at,
        )


class TemplateList(Answer):
    templates: list[TemplateOut]


class PreviewRequest(Request):
    name: str = Field(min_length=1, max_length=255)
    locale: str = Field(default="en", min_length=2, max_length=35)
    variables: dict[str, Any] = Field(default_factory=dict, description="sample variables")


class PreviewAnswer(Answer):
    name: str
    locale: str
    version: int
    subject: str
    text_body: str
    html_body: str | None


class SuppressionsQuery(Request):
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=10_000_000)


class SuppressionOut(Answer):
    address: str
    reason: SuppressionReason
    created_at: UtcTime | None
    expires_at: UtcTime | None
    note: str | None

    @classmethod
    def of(cls, entry: Suppression) -> SuppressionOut:
        return cls(
            address=entry.address,
            reason=entry.reason,
            created_at=entry.created_at,
            expires_at=entry.expires_at,
            note=entry.note,
        )


class SuppressionList(Answer):
    suppressions: list[SuppressionOut]


class SuppressionAdd(Request):
    addresses: list[str] = Field(min_length=1, max_length=MAX_ADDRESSES)
    reason: SuppressionReason = SuppressionReason.MANUAL
    expires_at: RequestTime | None = Field(default=None, description="none: forever")
    note: str | None = Field(default=None, max_length=1000, description="no personal data")


class SuppressionRemove(Request):
    """Removal by POST: addresses stay out of URLs (and access logs)."""

    addresses: list[str] = Field(min_length=1, max_length=MAX_ADDRESSES)


class SuppressionsChanged(Answer):
    changed: int = Field(description="entries added or lengthened, or removed")


class AuditQuery(Request):
    limit: int = Field(default=100, ge=1, le=1000)
    before: Id | None = Field(default=None, description="entries older than this id")
    job_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class AuditOut(Answer):
    id: int
    at: UtcTime
    actor: str = Field(description="the token's name")
    action: str
    outcome: str
    job_id: int | None
    client: str = Field(description="the client's address")
    detail: str | None

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditOut:
        # As read back from the store: both are set.
        assert entry.id is not None
        assert entry.at is not None
        return cls(
            id=entry.id,
            at=entry.at,
            actor=entry.actor,
            action=entry.action,
            outcome=entry.outcome,
            job_id=entry.job_id,
            client=entry.client,
            detail=entry.detail,
        )


class AuditList(Answer):
    entries: list[AuditOut]
    next_before: int | None
