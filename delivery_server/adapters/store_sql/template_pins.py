"""Starting a job: its start time, and the template version it is pinned to.

Versions of a template are numbered per name across its locales (``add_template``), so
every push after a job starts, in any locale, is above the version the job was pinned
to. A pinned job renders each email with the newest version of the email's locale (or of
the default locale) at or below its pin: a push mid-run changes nothing of the rest of
the job. ``EmailStore.template(name, locale, as_of=pin)`` is that lookup.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import sqlalchemy as sa

from delivery_server.adapters.store_sql.database import Database
from delivery_server.adapters.store_sql.schema import job, template
from delivery_server.errors import RetryableError

# The highest version of the job's template in any locale (correlated to ``delivery_job``).
_HIGHEST_VERSION = (
    sa.select(sa.func.max(template.c.version))
    .where(template.c.name == job.c.template_name)
    .scalar_subquery()
)


def start_jobs(job_ids: Sequence[int], now: datetime) -> sa.Update:
    """Set ``started_at`` and pin the template version of those of the jobs not yet
    started or pinned. What is set stays: the first of two publishers starting a job at
    once wins, and a version an upstream system pinned itself is kept."""
    return (
        sa.update(job)
        .where(
            job.c.id.in_(job_ids),
            sa.or_(job.c.started_at.is_(None), job.c.template_version.is_(None)),
        )
        .values(
            started_at=sa.func.coalesce(job.c.started_at, now),
            template_version=sa.func.coalesce(job.c.template_version, _HIGHEST_VERSION),
        )
    )


VERSION_LOCK_SECONDS = 30


@contextlib.asynccontextmanager
async def versions_locked(db: Database, name: str) -> AsyncIterator[None]:
    """Hold the name's version numbers while a push takes the next one.

    The unique key is per locale, so two pushes of one name in two locales could take
    the same number, and in READ COMMITTED a locking read of the highest takes no gap
    lock to stop them. On MariaDB/MySQL a named lock (a session of its own, held until
    the insert has committed) puts them one after the other; SQLite's write
    transaction already does."""
    if db.is_sqlite:
        yield
        return
    lock = "delivery_template:" + hashlib.sha256(name.encode()).hexdigest()[:40]  # ≤ 64
    async with db.engine.connect() as conn:
        held = await conn.scalar(
            sa.text("SELECT GET_LOCK(:lock, :seconds)"),
            {"lock": lock, "seconds": VERSION_LOCK_SECONDS},
        )
        if held != 1:
            raise RetryableError(f"template {name!r}: another push is taking a version")
        try:
            yield
        finally:
            await conn.execute(sa.text("SELECT RELEASE_LOCK(:lock)"), {"lock": lock})
            await conn.commit()
