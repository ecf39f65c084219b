"""Turning rows into domain records (and the column lists those rows come from)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from delivery_server.adapters.store_sql.schema import email, job
from delivery_server.errors import PermanentError
from delivery_server.models import (
    AttachmentRef,
    Email,
    EmailStatus,
    Job,
    JobStatus,
    Suppression,
    SuppressionReason,
    Template,
)

# The job of a ``delivery_email`` row as one JSON object column (a correlated scalar
# subquery): the claim reads one for each email, and the driver's per-column cost (column
# descriptions, value conversion) was the largest part of a claim's CPU with thirteen.
JOB_JSON = "job_json"
_JOB_TIMES = ("scheduled_at", "created_at", "started_at", "finished_at", "send_by")


def job_json_of_email() -> sa.Label[Any]:
    """The email's job, as a JSON object keyed by column name."""
    pairs: list[sa.ColumnElement[Any]] = []
    for column in job.c:
        pairs += [sa.literal_column(f"'{column.name}'"), column]
    return (
        sa.select(sa.func.json_object(*pairs))
        .where(job.c.id == email.c.job_id)
        .scalar_subquery()
        .label(JOB_JSON)
    )


@functools.lru_cache(maxsize=64)  # the emails of a batch mostly share a job (and its text)
def job_from_json(text: str) -> Job:
    """A job from ``job_json_of_email``. Both databases write times as
    ``YYYY-MM-DD HH:MM:SS[.ffffff]`` there."""
    values = json.loads(text)
    for name in _JOB_TIMES:
        if values[name] is not None:
            values[name] = datetime.fromisoformat(values[name])
    return job_from_row(values)


def job_from_row(row: Mapping[Any, Any]) -> Job:
    """A job from a row of ``delivery_job``."""
    return Job(
        id=row["id"],
        name=row["name"],
        status=JobStatus(row["status"]),
        template_name=row["template_name"],
        from_address=row["from_address"],
        reply_to=row["reply_to"],
        scheduled_at=row["scheduled_at"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        total_count=row["total_count"],
        sent_count=row["sent_count"],
        failed_count=row["failed_count"],
        # Absent from the values ``create_job`` builds its answer from.
        paused_reason=row.get("paused_reason"),
        unsubscribe=bool(row.get("unsubscribe", False)),
        template_version=row.get("template_version"),
        send_by=row.get("send_by"),
        channel=row.get("channel") or "email",
        target=row.get("target"),
        max_segments=row.get("max_segments"),
    )


def email_from_row(row: Mapping[Any, Any]) -> Email:
    """An email from a row of ``delivery_email``.

    Upstream systems write these rows directly, so malformed variables or attachments
    raise ``PermanentError`` (the email cannot be sent as stored)."""
    variables = row["variables"]
    if not isinstance(variables, dict):
        raise PermanentError("email variables must be a JSON object")
    raw_attachments = row["attachments"] or []
    if not isinstance(raw_attachments, list):
        raise PermanentError("email attachments must be a JSON list")
    return Email(
        id=row["id"],
        job_id=row["job_id"],
        to_address=row["to_address"],
        variables=variables,
        status=EmailStatus(row["status"]),
        attempts=row["attempts"],
        locale=row["locale"],
        attachments=tuple(AttachmentRef.from_json(item) for item in raw_attachments),
        last_error=row["last_error"],
        provider_message_id=row["provider_message_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sent_at=row["sent_at"],
    )


def template_from_row(row: Mapping[Any, Any]) -> Template:
    """A template version from a row of ``delivery_template``."""
    return Template(
        id=row["id"],
        name=row["name"],
        locale=row["locale"],
        version=row["version"],
        subject=row["subject"],
        text_body=row["text_body"],
        html_body=row["html_body"],
        created_at=row["created_at"],
        sms_body=row.get("sms_body"),
    )


def suppression_from_row(row: Mapping[Any, Any]) -> Suppression:
    """An entry from a row of ``delivery_suppression``."""
    return Suppression(
        address=row["address"],
        reason=SuppressionReason(row["reason"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        note=row["note"],
    )
