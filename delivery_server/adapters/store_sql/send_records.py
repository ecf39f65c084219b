"""Send records: many confirmed sends written as one UPDATE, and the late ones.

A send is confirmed while its email is ``sending`` (the usual case), or after the
reconciler called it ``unknown`` (its lease ran out mid-send): then the job, which may have
finished as failed on that guess, is reopened for the settler to count again. SES's own
``Send`` events resolve ``unknown`` emails through the same path.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.schema import email, job
from delivery_server.models import EmailStatus, JobStatus, utcnow

_NOW = sa.bindparam("b_now", type_=sa.DateTime)
_EMAIL_IDS: sa.BindParameter[Any] = sa.bindparam("b_email_ids", expanding=True)

# Jobs of emails still `unknown` in a batch of confirmed sends.
LATE_CONFIRMATIONS = sa.select(email.c.job_id).where(
    email.c.id.in_(_EMAIL_IDS), email.c.status == EmailStatus.UNKNOWN
)
# Back to processing, so that the settler counts the job again (and completes it when
# the confirmation was the last doubt).
REOPEN_JOBS = (
    sa.update(job)
    .where(
        job.c.id.in_(sa.bindparam("b_job_ids", expanding=True)),
        job.c.status == JobStatus.FAILED,
    )
    .values(status=JobStatus.PROCESSING, finished_at=None)
)


@dataclass(frozen=True, slots=True)
class SendRecord:
    """A confirmed send: which email, the provider's message id, when, the template
    version that rendered it (None when the record comes from elsewhere, SES's ``Send``
    event: the email keeps the version it has) and the parts it was billed as (an SMS's
    segments; None for channels that do not count them: the email keeps what it has)."""

    email_id: int
    provider_message_id: str
    sent_at: datetime
    template_version: int | None = None
    segments: int | None = None


class _Versions(Enum):
    """How the template versions of a batch of sends are written."""

    NONE = 1  # none known: left as they are
    ONE = 2  # one version for the whole batch (the usual: one job, one locale)
    EACH = 3  # a version per email


async def record_late_sends(conn: AsyncConnection, sends: list[SendRecord]) -> None:
    """Record the sends among ``sends`` of emails the reconciler called ``unknown``
    (their lease ran out mid-send), and reopen their jobs: they may have been finished
    as failed on that guess; the settler counts them again. (Also how SES's own ``Send``
    events resolve ``unknown`` emails.)"""
    ids = [send.email_id for send in sends]
    late = (await conn.execute(LATE_CONFIRMATIONS, {"b_email_ids": ids})).scalars().all()
    if late:
        await conn.execute(*mark_sent_many(sends, EmailStatus.UNKNOWN))
        await conn.execute(REOPEN_JOBS, {"b_job_ids": sorted(set(late))})


def mark_sent_many(
    sends: list[SendRecord], status: EmailStatus
) -> tuple[sa.Update, dict[str, Any]]:
    """One UPDATE recording many sends (each its own message id and time) of the emails
    among them that are in ``status``."""
    params: dict[str, Any] = {"b_now": utcnow()}
    for n, send in enumerate(sends):
        params[f"b_id{n}"] = send.email_id
        params[f"b_mid{n}"] = send.provider_message_id
        params[f"b_at{n}"] = send.sent_at
    versions = {send.template_version for send in sends}
    if versions == {None}:
        written = _Versions.NONE
    elif len(versions) == 1:
        written = _Versions.ONE
        params["b_tv"] = sends[0].template_version
    else:
        written = _Versions.EACH
        params.update({f"b_tv{n}": send.template_version for n, send in enumerate(sends)})
    # Most batches are email sends, none counted: their statement leaves the column alone.
    counted = any(send.segments is not None for send in sends)
    if counted:
        params.update({f"b_sg{n}": send.segments for n, send in enumerate(sends)})
    return _mark_sent_statement(len(sends), status, written, counted), params


# Sized for every batch size of both statuses, each way of writing versions and with or
# without segments (``SENT_BATCH`` is 50).
@functools.lru_cache(maxsize=1024)
def _mark_sent_statement(
    size: int, status: EmailStatus, versions: _Versions, segments: bool
) -> sa.Update:
    """The UPDATE for ``size`` sends, built once per size (and so compiled once: SQL
    compilation is cached per statement object, and building the statement with its
    CASE cost more than executing it)."""
    ids = [sa.bindparam(f"b_id{n}", type_=sa.BigInteger) for n in range(size)]

    def per_email(name: str, type_: Any) -> sa.Case[Any]:
        return sa.case(
            *((email.c.id == ids[n], sa.bindparam(f"{name}{n}", type_=type_)) for n in range(size))
        )

    values: dict[str, Any] = {
        "status": EmailStatus.SENT,
        "provider_message_id": per_email("b_mid", sa.String),
        "sent_at": per_email("b_at", sa.DateTime),
        "lease_until": None,
        "updated_at": _NOW,
    }
    # A send recorded without a version (one of a mixed batch) keeps the one it has.
    if versions is _Versions.ONE:
        values["template_version"] = sa.bindparam("b_tv", type_=sa.Integer)
    elif versions is _Versions.EACH:
        each = per_email("b_tv", sa.Integer)
        values["template_version"] = sa.func.coalesce(each, email.c.template_version)
    if segments:  # an uncounted send of a mixed batch keeps what it has
        counted = per_email("b_sg", sa.SmallInteger)
        values["segments"] = sa.func.coalesce(counted, email.c.segments)
    return sa.update(email).where(email.c.id.in_(ids), email.c.status == status).values(values)
