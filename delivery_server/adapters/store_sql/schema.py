"""The tables of DESIGN §3, as SQLAlchemy Core metadata shared by MySQL/MariaDB and SQLite.

This is the schema the code expects; the migrations under ``migrations/versions`` build it
(``tests/contract/test_store.py`` checks that they agree).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.compiler import compiles

# InnoDB ids are BIGINT; SQLite only autoincrements an INTEGER PRIMARY KEY.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Naive UTC with microseconds: MySQL's DATETIME would otherwise round to whole seconds,
# which breaks "updated_at < cutoff" and newest-first orderings.
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# Statement bodies can be large; TEXT is 64 KiB on MySQL.
Body = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
# A normalised address, compared exactly: MariaDB's default collation would take
# "jäne@" and "jane@" for one address (and one primary key). Mixed with the emails'
# case-insensitive collation in a comparison, the binary one is used, so the index is.
ADDRESS_CHARS = 320
Address = sa.String(ADDRESS_CHARS).with_variant(
    mysql.VARCHAR(ADDRESS_CHARS, collation="utf8mb4_bin"), "mysql", "mariadb"
)
# Stored as JSON text on both; None stays SQL NULL rather than the JSON literal null.
JsonValue = sa.JSON(none_as_null=True)


class UtcNow(sa.sql.expression.FunctionElement[Any]):
    """The database's clock in naive UTC, as a column default (the insert contract):
    ``CURRENT_TIMESTAMP`` is the session's time zone on MariaDB/MySQL, UTC on SQLite."""

    type = sa.DateTime()
    inherit_cache = True


@compiles(UtcNow, "mysql")
def _utc_now_mysql(element: UtcNow, compiler: Any, **kw: Any) -> str:
    return "(UTC_TIMESTAMP(6))"


@compiles(UtcNow)
def _utc_now_default(element: UtcNow, compiler: Any, **kw: Any) -> str:
    return "(CURRENT_TIMESTAMP)"


JOB_STATUS_INDEX = "ix_delivery_email_job_status"
JOB_DELIVERY_INDEX = "ix_delivery_email_job_delivery"
# Short enough to index and to show in a table: a bounce type or an SMTP status line.
DELIVERY_DETAIL_CHARS = 255

MYSQL_TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}

metadata = sa.MetaData()

template = sa.Table(
    "delivery_template",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("locale", sa.String(35), nullable=False, server_default="en"),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("subject", sa.Text(), nullable=False),
    sa.Column("text_body", Body, nullable=False),
    sa.Column("html_body", Body, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    # What an sms job renders (at most 1600 bytes once rendered; the source may be more).
    sa.Column("sms_body", sa.Text(), nullable=True),
    sa.UniqueConstraint("name", "locale", "version", name="uq_delivery_template_version"),
    **MYSQL_TABLE_OPTIONS,
)

job = sa.Table(
    "delivery_job",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="draft"),
    sa.Column("template_name", sa.String(255), nullable=False),
    sa.Column("from_address", sa.String(320), nullable=False),
    sa.Column("reply_to", sa.String(320), nullable=True),
    sa.Column("scheduled_at", Timestamp, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False, server_default=UtcNow()),
    sa.Column("started_at", Timestamp, nullable=True),
    sa.Column("finished_at", Timestamp, nullable=True),
    sa.Column("total_count", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("sent_count", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("failed_count", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("paused_reason", sa.Text(), nullable=True),
    # The job opted in to RFC 8058 one-click unsubscribe headers (statements do not).
    sa.Column("unsubscribe", sa.Boolean(), nullable=False, server_default=sa.false()),
    # The template version every email of the job renders with, fixed when it starts.
    sa.Column("template_version", sa.Integer(), nullable=True),
    # Emails not sent by then become ``expired`` (not sent late).
    sa.Column("send_by", Timestamp, nullable=True),
    # When retention erased the personal data of the job's emails.
    sa.Column("purged_at", Timestamp, nullable=True),
    # What the job delivers through (``channels.CHANNEL_NAMES``) and, for drops and
    # webhooks, where (an s3://, sftp:// or https:// URI; never a secret).
    sa.Column("channel", sa.String(16), nullable=False, server_default="email"),
    sa.Column("target", sa.String(1024), nullable=True),
    # An sms job's cap on segments per SMS (1..12); NULL: DELIVERY_SMS_MAX_SEGMENTS.
    sa.Column("max_segments", sa.SmallInteger(), nullable=True),
    # The publisher polls for processing jobs that are due.
    sa.Index("ix_delivery_job_status_scheduled", "status", "scheduled_at"),
    **MYSQL_TABLE_OPTIONS,
)

email = sa.Table(
    "delivery_email",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "job_id",
        Id,
        sa.ForeignKey("delivery_job.id", ondelete="CASCADE", name="fk_delivery_email_job"),
        nullable=False,
    ),
    sa.Column("to_address", sa.String(320), nullable=False),
    sa.Column("locale", sa.String(35), nullable=True),
    sa.Column("variables", JsonValue, nullable=False),
    sa.Column("attachments", JsonValue, nullable=True),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("provider_message_id", sa.String(255), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False, server_default=UtcNow()),
    sa.Column("updated_at", Timestamp, nullable=False, server_default=UtcNow()),
    sa.Column("sent_at", Timestamp, nullable=True),
    sa.Column("lease_until", Timestamp, nullable=True),
    # What the recipient's side reported (tracking), apart from the pipeline's status.
    sa.Column("delivery_status", sa.String(16), nullable=True),
    sa.Column("delivery_detail", sa.String(DELIVERY_DETAIL_CHARS), nullable=True),
    sa.Column("delivery_updated_at", Timestamp, nullable=True),
    sa.Column("opened_at", Timestamp, nullable=True),
    sa.Column("clicked_at", Timestamp, nullable=True),
    # The template version that rendered it (the job's pinned one).
    sa.Column("template_version", sa.Integer(), nullable=True),
    # Why a failed email failed: ``permanent`` or ``transient`` (``models.FailureKind``);
    # NULL when not failed, or failed before r0006 without a PermanentError.
    sa.Column("failure_kind", sa.String(16), nullable=True),
    # What its send was billed as, for channels billed per part (an SMS's segments);
    # NULL for the others (``channels.Channel.segments_of``).
    sa.Column("segments", sa.SmallInteger(), nullable=True),
    # Publishing pages (job, pending, by id), per-job counts, and the job summary.
    sa.Index(JOB_STATUS_INDEX, "job_id", "status", "id"),
    # The reconciler: stale queued emails and expired sending leases.
    sa.Index("ix_delivery_email_status_updated", "status", "updated_at"),
    # Tracking: events without an email_id tag are matched by SES's message id.
    sa.Index("ix_delivery_email_provider_message_id", "provider_message_id"),
    # Per-job counts by delivery status: the job summary, the gauge and the brake.
    sa.Index(JOB_DELIVERY_INDEX, "job_id", "delivery_status"),
    # ``jobs find ADDR``: a customer's emails across jobs.
    sa.Index("ix_delivery_email_to_address", "to_address"),
    **MYSQL_TABLE_OPTIONS,
)

# What SES reported, each event once. No foreign keys: the history outlives purged
# emails, and an unmatched event has no email at all.
event = sa.Table(
    "delivery_event",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("email_id", Id, nullable=True),
    sa.Column("job_id", Id, nullable=True),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("provider_message_id", sa.String(255), nullable=False),
    sa.Column("occurred_at", Timestamp, nullable=False),
    sa.Column("received_at", Timestamp, nullable=False),
    sa.Column("detail", JsonValue, nullable=True),
    # What the event weighs on the sending account's reputation, for the brake:
    # ``hard_bounce`` or ``complaint`` (SES's bounce and complaint rates), else NULL.
    sa.Column("reputation", sa.String(16), nullable=True),
    # Redeliveries and duplicate notifications are recognised by this key.
    sa.UniqueConstraint(
        "provider_message_id", "event_type", "occurred_at", name="uq_delivery_event_once"
    ),
    # An email's history.
    sa.Index("ix_delivery_event_email", "email_id", "occurred_at"),
    # The brake's counts: read from the index alone.
    sa.Index("ix_delivery_event_job_reputation", "job_id", "reputation", "email_id"),
    **MYSQL_TABLE_OPTIONS,
)

# Addresses never to be mailed again (or not before ``expires_at``), normalised: the
# claim looks each email's address up here by primary key.
suppression = sa.Table(
    "delivery_suppression",
    metadata,
    sa.Column("address", Address, primary_key=True),
    sa.Column("reason", sa.String(16), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=True),
    sa.Column("note", sa.Text(), nullable=True),
    # ``suppressions list``: newest first.
    sa.Index("ix_delivery_suppression_created", "created_at"),
    **MYSQL_TABLE_OPTIONS,
)

# Live sending processes, so that they can share one account-wide send rate (not in
# DESIGN §3: bookkeeping of the fleet, not of jobs).
instance = sa.Table(
    "delivery_instance",
    metadata,
    sa.Column("instance_id", sa.String(100), primary_key=True),
    sa.Column("last_seen", Timestamp, nullable=False),
    **MYSQL_TABLE_OPTIONS,
)

# API tokens of the operator console (issue 13): only a token's SHA-256 is kept. A revoked
# token stays listed (who had access, until when) until a new token takes its name.
api_token = sa.Table(
    "delivery_api_token",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("last_used_at", Timestamp, nullable=True),
    sa.Column("revoked_at", Timestamp, nullable=True),
    sa.UniqueConstraint("name", name="uq_delivery_api_token_name"),
    # Every request finds its token by the hash of what it presented.
    sa.UniqueConstraint("token_hash", name="uq_delivery_api_token_hash"),
    **MYSQL_TABLE_OPTIONS,
)

# Who did what through the API, on which job, when and from where. No foreign key: the
# trail outlives purged and deleted jobs.
audit = sa.Table(
    "delivery_audit",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("job_id", Id, nullable=True),
    sa.Column("client", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text(), nullable=True),
    # A job's history, newest first.
    sa.Index("ix_delivery_audit_job", "job_id", "id"),
    **MYSQL_TABLE_OPTIONS,
)

# What pre-flight (``jobs check JOB``) read of each attachment, each time it checked: the
# audit trail of which bytes were about to go out. Ids, sizes and digests only (no URI,
# no file name: those can name a customer). No foreign keys, as for events.
attachment_digest = sa.Table(
    "delivery_attachment_digest",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("job_id", Id, nullable=False),
    sa.Column("email_id", Id, nullable=False),
    sa.Column("number", sa.Integer(), nullable=False),  # the email's first attachment is 1
    sa.Column("size_bytes", sa.BigInteger(), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("checked_at", Timestamp, nullable=False),
    # An email's attachments as checked, over time; a job's checks in order.
    sa.Index("ix_delivery_attachment_digest_email", "email_id", "number", "checked_at"),
    sa.Index("ix_delivery_attachment_digest_job", "job_id", "id"),
    **MYSQL_TABLE_OPTIONS,
)
