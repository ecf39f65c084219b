"""The statements of one email's claim and settlement, built once.

They run for every send, so they are built once (with bound parameters) instead of on
each call: that halves the Python time of a claim. ``emails`` runs them.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from delivery_server.adapters.store_sql.rows import job_json_of_email
from delivery_server.adapters.store_sql.schema import email, job
from delivery_server.adapters.store_sql.suppressions import address_suppressed
from delivery_server.models import TERMINAL_EMAIL_STATUSES, EmailStatus, JobStatus

# A consumer that outlived its lease still knows best how its send ended: the
# reconciler's "unknown" is a guess that a confirmed outcome may overwrite.
SETTLEABLE = (EmailStatus.SENDING, EmailStatus.UNKNOWN)
FINAL_STATUSES = TERMINAL_EMAIL_STATUSES - {EmailStatus.SENT}

_EMAIL_ID = sa.bindparam("b_email_id", type_=sa.BigInteger)
_NOW = sa.bindparam("b_now", type_=sa.DateTime)
_ERROR = sa.bindparam("b_error", type_=sa.Text)

_EMAIL_IDS: sa.BindParameter[Any] = sa.bindparam("b_email_ids", expanding=True)
# A batch of claims (see ``claim``): lock the queued ones and read them with their jobs,
# then claim them. The job is a scalar subquery, not a join: on MariaDB a join would lock
# the job row too (every claim of a job would queue behind the others and behind the
# settler); a subquery of a locking read does not lock (tested).
_EMAIL_WITH_JOB_JSON = [*email.c, job_json_of_email()]
# With each email, whether its address is suppressed (one primary-key probe; ``b_now``).
LOCK_QUEUED = (
    sa.select(*_EMAIL_WITH_JOB_JSON, address_suppressed())
    .where(email.c.id.in_(_EMAIL_IDS), email.c.status == EmailStatus.QUEUED)
    .order_by(email.c.id)
    .with_for_update()
)
CLAIM_MANY = (
    sa.update(email)
    .where(
        email.c.id.in_(_EMAIL_IDS),
        email.c.status == EmailStatus.QUEUED,
        sa.exists().where(job.c.id == email.c.job_id, job.c.status == JobStatus.PROCESSING),
    )
    .values(
        status=EmailStatus.SENDING,
        attempts=email.c.attempts + 1,
        lease_until=sa.bindparam("b_lease_until", type_=sa.DateTime),
        updated_at=_NOW,
    )
)
CLAIMED_ROWS = sa.select(*_EMAIL_WITH_JOB_JSON).where(
    email.c.id.in_(_EMAIL_IDS), email.c.status == EmailStatus.SENDING
)
CLAIM_STATES = (
    sa.select(email.c.id, email.c.status, job.c.status.label("job_status"))
    .select_from(email.join(job))
    .where(email.c.id.in_(_EMAIL_IDS))
)
# A claim batch whose COMMIT went unanswered: give back whatever it did claim. Its lease
# stamp (microseconds, taken once per batch) tells its rows from anyone else's.
RELEASE_UNCONFIRMED_CLAIMS = (
    sa.update(email)
    .where(
        email.c.id.in_(_EMAIL_IDS),
        email.c.status == EmailStatus.SENDING,
        email.c.lease_until == sa.bindparam("b_lease_until", type_=sa.DateTime),
    )
    .values(
        status=EmailStatus.QUEUED,
        attempts=sa.case((email.c.attempts > 0, email.c.attempts - 1), else_=0),
        lease_until=None,
        updated_at=_NOW,
    )
)
# A None error keeps the previous one (a shutdown or throttle has nothing new to say).
_SETTLE_VALUES = {
    "lease_until": None,
    "updated_at": _NOW,
    "last_error": sa.func.coalesce(_ERROR, email.c.last_error),
}
_GIVE_BACK = sa.bindparam("b_give_back", type_=sa.Integer)
MARK_RETRY = (
    sa.update(email)
    .where(email.c.id == _EMAIL_ID, email.c.status == EmailStatus.SENDING)
    .values(
        status=EmailStatus.QUEUED,
        attempts=sa.case((email.c.attempts > _GIVE_BACK, email.c.attempts - _GIVE_BACK), else_=0),
        **_SETTLE_VALUES,
    )
)
# The version that rendered it, when the email got that far (None keeps what is there).
_RENDERED_WITH = sa.func.coalesce(
    sa.bindparam("b_template_version", type_=sa.Integer), email.c.template_version
)
MARK_FINAL = (
    sa.update(email)
    .where(email.c.id == _EMAIL_ID, email.c.status.in_(SETTLEABLE))
    .values(
        status=sa.bindparam("b_status", type_=sa.String),
        template_version=_RENDERED_WITH,
        failure_kind=sa.bindparam("b_failure_kind", type_=sa.String),
        **_SETTLE_VALUES,
    )
)
# Too late to send (its job's send_by came while it was in hand): never an attempt.
MARK_EXPIRED = (
    sa.update(email)
    .where(email.c.id == _EMAIL_ID, email.c.status.in_(SETTLEABLE))
    .values(
        status=EmailStatus.EXPIRED,
        attempts=sa.case((email.c.attempts > 0, email.c.attempts - 1), else_=0),
        template_version=_RENDERED_WITH,
        **_SETTLE_VALUES,
    )
)
# Queued emails of a job whose send_by has passed, found by a claim: final at once.
EXPIRE_QUEUED = (
    sa.update(email)
    .where(email.c.id.in_(_EMAIL_IDS), email.c.status == EmailStatus.QUEUED)
    .values(status=EmailStatus.EXPIRED, updated_at=_NOW)
)
