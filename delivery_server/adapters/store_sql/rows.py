"""Turning rows into domain records (and the column lists those rows come from)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from delivery_server.adapters.store_sql.schema import email, job
from delivery_server.errors import PermanentError
from delivery_server.models import AttachmentRef, Email, EmailStatus, Job, JobStatus, Template

JOB_PREFIX = "job__"
# The email and its job in one row: job columns are labelled ``job__<name>`` (``job_id`` is taken).
EMAIL_WITH_JOB_COLUMNS: list[sa.ColumnElement[Any]] = [
    *email.c,
    *(column.label(JOB_PREFIX + column.name) for column in job.c),
]


def job_from_row(row: Mapping[Any, Any], prefix: str = "") -> Job:
    """A job from a row of ``delivery_job`` (columns optionally prefixed)."""
    return Job(
        id=row[prefix + "id"],
        name=row[prefix + "name"],
        status=JobStatus(row[prefix + "status"]),
        template_name=row[prefix + "template_name"],
        from_address=row[prefix + "from_address"],
        reply_to=row[prefix + "reply_to"],
        scheduled_at=row[prefix + "scheduled_at"],
        created_at=row[prefix + "created_at"],
        started_at=row[prefix + "started_at"],
        finished_at=row[prefix + "finished_at"],
        total_count=row[prefix + "total_count"],
        sent_count=row[prefix + "sent_count"],
        failed_count=row[prefix + "failed_count"],
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
    )
