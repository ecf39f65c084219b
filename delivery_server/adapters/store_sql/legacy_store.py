"""``SqlStore`` on an upstream system's own job and email tables (DESIGN §11).

Their rows are taken over into our ``delivery_job``/``delivery_email`` (the side tables,
keyed by their ids) when their job shows the processing value: the job, then its emails,
in one transaction. From then on every query of ``SqlStore`` runs on our tables with its
usual guarantees (SKIP LOCKED publishing, conditional claims, one send per email), and
the triggers ``db upgrade`` created (``legacy_schema``) keep their status column showing
the coarse state, and the columns the map names, in the same transaction as each write.

What upstream does to a job we took over is followed for the moves an operator makes
(start a draft, pause, resume, cancel); other changes to their rows are not read back.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import INSERT_BATCH, batches
from delivery_server.adapters.store_sql.database import Database
from delivery_server.adapters.store_sql.engine import create_engine
from delivery_server.adapters.store_sql.legacy_schema import (
    TheirTables,
    coarse,
    decoded,
    describe,
    known_values,
)
from delivery_server.adapters.store_sql.schema import email, job
from delivery_server.adapters.store_sql.store import SqlStore
from delivery_server.errors import ConfigError, ConflictError, NotFoundError
from delivery_server.models import EmailStatus, Job, JobStatus, NewEmail, utcnow
from delivery_server.schema_map import SETTING, SchemaMap

# Our jobs whose status upstream may still change (a finished job stays finished).
FOLLOWED = (JobStatus.DRAFT, JobStatus.PROCESSING, JobStatus.PAUSED)
PAUSED_UPSTREAM = "paused by the upstream system"
INVALID_VARIABLES = "email variables are not valid JSON"
# The job columns read from their row when it is taken over (the rest keep our defaults).
_JOB_TAKEN = ("name", "template_name", "from_address", "reply_to", "scheduled_at",
              "created_at", "send_by")  # fmt: skip


class MappedSqlStore(SqlStore):
    """The store on a ``DELIVERY_SCHEMA_MAP`` schema: the same port, their rows."""

    def __init__(self, database: Database, their: TheirTables) -> None:
        super().__init__(database)
        self._their = their

    @classmethod
    async def connect_mapped(
        cls, database_url: str, schema_map: SchemaMap, *, pool_size: int = 10
    ) -> MappedSqlStore:
        """A store on their tables; the map is checked against the database first
        (``ConfigError`` naming the key that does not match)."""
        database = Database(create_engine(database_url, pool_size=pool_size))
        try:

            async def read(conn: AsyncConnection) -> TheirTables:
                return await conn.run_sync(describe, schema_map)

            their = await database.run(read, write=False)
        except BaseException:
            await database.close()
            raise
        return cls(database, their)

    async def due_jobs(self, now: datetime) -> list[Job]:
        """Take over their jobs set to processing and follow upstream's moves first."""
        await self.take_over()
        return await super().due_jobs(now)

    async def take_over(self) -> int:
        """Take over the jobs upstream set to processing (with their emails), and follow
        what upstream did to the jobs we hold that are not finished. Return how many jobs
        were taken over. One read when there is nothing to do."""
        new, moved = await self._db.run(self._upstream_news, write=False)
        if new:
            await self._db.run(lambda conn: self._take_jobs(conn, new))
        for job_id, ours, theirs in moved:
            await self._follow(job_id, JobStatus(ours), theirs)
        return len(new)

    async def _upstream_news(
        self, conn: AsyncConnection
    ) -> tuple[list[int], list[tuple[int, str, Any]]]:
        their, table_map = self._their.job, self._their.map.job
        new = await conn.execute(
            sa.select(their.c.id)
            .where(
                their.c.status == table_map.values[JobStatus.PROCESSING],
                ~sa.exists().where(job.c.id == their.c.id),
            )
            .order_by(their.c.id)
        )
        moved = await conn.execute(
            sa.select(job.c.id, job.c.status, their.c.status.label("theirs"))
            .join_from(job, their, their.c.id == job.c.id)
            .where(job.c.status.in_(FOLLOWED), their.c.status != coarse(table_map, job.c.status))
        )
        return list(new.scalars()), [(row.id, row.status, row.theirs) for row in moved]

    async def _take_jobs(self, conn: AsyncConnection, job_ids: list[int]) -> None:
        """Their jobs (still processing, not yet ours) and their emails, into ours."""
        their, table_map = self._their.job, self._their.map.job
        now = sa.literal(utcnow(), sa.DateTime)
        taken: dict[str, sa.ColumnElement[Any]] = {
            "id": their.c.id,
            "status": sa.literal(JobStatus.PROCESSING.value),
            # An upstream schema knows only email (DESIGN §11); said, not left to a default.
            "channel": sa.literal("email"),
        }
        for name in _JOB_TAKEN:
            if name in their.c:
                taken[name] = their.c[name]
        fallback_name = sa.literal("job ") + sa.cast(their.c.id, sa.String)
        taken["name"] = (
            sa.func.coalesce(taken["name"], fallback_name) if "name" in taken else (fallback_name)
        )
        taken["created_at"] = sa.func.coalesce(taken.get("created_at", sa.null()), now)
        await conn.execute(
            sa.insert(job).from_select(
                list(taken),
                sa.select(*taken.values()).where(
                    their.c.id.in_(job_ids),
                    their.c.status == table_map.values[JobStatus.PROCESSING],
                    ~sa.exists().where(job.c.id == their.c.id),
                ),
            )
        )
        await self._take_emails(conn, job_ids)

    async def _take_emails(self, conn: AsyncConnection, job_ids: list[int]) -> int:
        """Their emails of ``job_ids`` not yet ours, into ours (their status decoded;
        variables that are not JSON make the email ``failed``, never sent); the jobs'
        ``total_count`` follows. Return how many were taken."""
        their, table_map = self._their.email, self._their.map.email
        now = sa.literal(utcnow(), sa.DateTime)
        valid = sa.func.json_valid(their.c.variables)
        taken: dict[str, sa.ColumnElement[Any]] = {
            "id": their.c.id,
            "job_id": their.c.job_id,
            "to_address": their.c.to_address,
            "variables": sa.case((valid, their.c.variables), else_=sa.literal_column("'{}'")),
            "status": sa.case(
                (valid, decoded(table_map, their.c.status)),
                else_=sa.literal(EmailStatus.FAILED.value),
            ),
            "attempts": sa.literal(0),
            "last_error": sa.case((valid, sa.null()), else_=sa.literal(INVALID_VARIABLES)),
            "created_at": sa.func.coalesce(their.c.created_at, now)
            if "created_at" in their.c
            else now,
            "updated_at": now,
        }
        if "locale" in their.c:
            taken["locale"] = their.c.locale
        if "attachments" in their.c:
            attachments = their.c.attachments
            taken["attachments"] = sa.case(
                (sa.func.json_valid(attachments), attachments), else_=sa.null()
            )
        result = await conn.execute(
            sa.insert(email).from_select(
                list(taken),
                sa.select(*taken.values()).where(
                    their.c.job_id.in_(job_ids),
                    their.c.status.in_(known_values(table_map)),
                    ~sa.exists().where(email.c.id == their.c.id),
                ),
            )
        )
        counted = sa.select(sa.func.count()).where(email.c.job_id == job.c.id).scalar_subquery()
        await conn.execute(sa.update(job).where(job.c.id.in_(job_ids)).values(total_count=counted))
        return int(result.rowcount)

    async def _follow(self, job_id: int, ours: JobStatus, theirs: Any) -> None:
        """Upstream started, paused, resumed or cancelled a job of ours."""
        try:
            wanted = JobStatus(self._their.map.job.canonical(theirs))
        except KeyError:
            return  # a value the map does not know: not ours to read
        # A concurrent operator command got there first: the next poll looks again.
        with contextlib.suppress(ConflictError, NotFoundError):
            if wanted is JobStatus.PROCESSING and ours in (JobStatus.DRAFT, JobStatus.PAUSED):
                await self.set_job_status(job_id, JobStatus.PROCESSING, expected=[ours])
            elif wanted is JobStatus.PAUSED and ours is JobStatus.PROCESSING:
                await self.pause_job(job_id, PAUSED_UPSTREAM)
            elif wanted is JobStatus.CANCELLED:
                await self.cancel_job(job_id)

    async def create_job(self, *args: Any, **kwargs: Any) -> Job:
        """Create a draft job in their table and ours, under their id."""
        created = await super().create_job(*args, **kwargs)
        their, table_map = self._their.job, self._their.map.job
        values: dict[str, Any] = {"status": table_map.values[created.status]}
        for name in _JOB_TAKEN:
            if name in their.c:
                values[name] = getattr(created, name)

        async def work(conn: AsyncConnection) -> int:
            result = await conn.execute(sa.insert(their).values(values))
            (their_id,) = result.inserted_primary_key or (None,)
            assert their_id is not None  # their key is an integer primary key (describe)
            await conn.execute(sa.update(job).where(job.c.id == created.id).values(id=their_id))
            return int(their_id)

        try:
            their_id = await self._db.run(work)
        except BaseException:
            # Not in their table: not a job upstream or we could follow.
            await self._db.run(
                lambda conn: conn.execute(sa.delete(job).where(job.c.id == created.id))
            )
            raise
        return dataclasses.replace(created, id=their_id)

    async def add_emails(self, job_id: int, emails: Iterable[NewEmail]) -> int:
        """Insert pending emails into their table, then take them over, in one
        transaction; return how many."""
        new_emails = list(emails)
        their = self._their.email
        pending = self._their.map.email.values[EmailStatus.PENDING]
        for name, needed in (
            ("locale", any(e.locale for e in new_emails)),
            ("attachments", any(e.attachments for e in new_emails)),
        ):
            if needed and name not in their.c:
                raise ConfigError(
                    f"configuration error: {SETTING}: email.columns.{name}: the recipients"
                    f" have {name}, and {their.name!r} has no column for them"
                )

        def row(new: NewEmail) -> dict[str, Any]:
            values: dict[str, Any] = {
                "job_id": job_id,
                "to_address": new.to_address,
                "variables": new.variables,
                "status": pending,
            }
            if "locale" in their.c:
                values["locale"] = new.locale
            if "attachments" in their.c:
                values["attachments"] = [a.to_json() for a in new.attachments] or None
            if "created_at" in their.c:
                values["created_at"] = utcnow()
            return values

        async def work(conn: AsyncConnection) -> int:
            if await conn.scalar(sa.select(job.c.id).where(job.c.id == job_id)) is None:
                raise NotFoundError(f"job {job_id} does not exist")
            for batch in batches(new_emails, INSERT_BATCH):
                await conn.execute(sa.insert(their), [row(e) for e in batch])
            if new_emails:
                await self._take_emails(conn, [job_id])
            return len(new_emails)

        return await self._db.run(work)
