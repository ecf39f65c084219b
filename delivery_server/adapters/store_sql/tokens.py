"""API tokens and the audit trail (``ports.ConsoleStore``'s token and audit half)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import Queries
from delivery_server.adapters.store_sql.schema import api_token, audit
from delivery_server.api_tokens import ApiToken, AuditEntry, TokenScope
from delivery_server.errors import ConflictError
from delivery_server.models import utcnow

MAX_DETAIL_CHARS = 2000


class TokenQueries(Queries):
    """Tokens by name and by hash; the audit trail, newest first."""

    async def add_api_token(self, name: str, scope: TokenScope, token_hash: str) -> ApiToken:
        """Store a new token. A revoked token of the same name is replaced (its name is
        free again); an active one is a ``ConflictError``."""

        async def work(conn: AsyncConnection) -> ApiToken:
            await conn.execute(
                sa.delete(api_token).where(
                    api_token.c.name == name, api_token.c.revoked_at.is_not(None)
                )
            )
            values: dict[str, Any] = {
                "name": name,
                "scope": scope,
                "token_hash": token_hash,
                "created_at": utcnow(),
            }
            result = await conn.execute(sa.insert(api_token).values(values))
            (token_id,) = result.inserted_primary_key or (None,)
            return _token({"id": token_id, "last_used_at": None, "revoked_at": None, **values})

        try:
            return await self._db.run(work)
        except sa_exc.IntegrityError as exc:
            raise ConflictError(f"a token named {name!r} exists already") from exc

    async def api_token_by_hash(self, token_hash: str) -> ApiToken | None:
        """The token (active or revoked) whose hash this is."""

        async def read(conn: AsyncConnection) -> ApiToken | None:
            row = (
                (
                    await conn.execute(
                        sa.select(api_token).where(api_token.c.token_hash == token_hash)
                    )
                )
                .mappings()
                .first()
            )
            return None if row is None else _token(row)

        return await self._db.run(read, write=False)

    async def touch_api_token(self, token_id: int, used_at: datetime) -> None:
        """Record that a token was used (``last_used_at`` only moves forward)."""

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(
                sa.update(api_token)
                .where(
                    api_token.c.id == token_id,
                    sa.or_(api_token.c.last_used_at.is_(None), api_token.c.last_used_at < used_at),
                )
                .values(last_used_at=used_at)
            )

        await self._db.run(work)

    async def api_tokens(self) -> list[ApiToken]:
        """Every token, by name."""

        async def read(conn: AsyncConnection) -> list[ApiToken]:
            rows = await conn.execute(sa.select(api_token).order_by(api_token.c.name))
            return [_token(row) for row in rows.mappings()]

        return await self._db.run(read, write=False)

    async def revoke_api_token(self, name: str) -> bool:
        """Revoke the active token of that name; False when there is none."""

        async def work(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                sa.update(api_token)
                .where(api_token.c.name == name, api_token.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            return bool(result.rowcount)

        return await self._db.run(work)

    async def record_audit(self, entry: AuditEntry) -> AuditEntry:
        """Write one audit entry (``at`` defaults to now); return it with its id."""
        values: dict[str, Any] = {
            "at": entry.at or utcnow(),
            "actor": entry.actor[:64],
            "action": entry.action[:64],
            "outcome": entry.outcome[:32],
            "job_id": entry.job_id,
            "client": entry.client[:64],
            "detail": None if entry.detail is None else entry.detail[:MAX_DETAIL_CHARS],
        }

        async def work(conn: AsyncConnection) -> AuditEntry:
            result = await conn.execute(sa.insert(audit).values(values))
            (entry_id,) = result.inserted_primary_key or (None,)
            return _audit({"id": entry_id, **values})

        return await self._db.run(work)

    async def audit_entries(
        self, limit: int, before_id: int | None = None, job_id: int | None = None
    ) -> list[AuditEntry]:
        """A page of the trail, newest first: entries older than ``before_id``, of one job
        when ``job_id`` is given."""

        async def read(conn: AsyncConnection) -> list[AuditEntry]:
            query = sa.select(audit).order_by(audit.c.id.desc()).limit(limit)
            if before_id is not None:
                query = query.where(audit.c.id < before_id)
            if job_id is not None:
                query = query.where(audit.c.job_id == job_id)
            return [_audit(row) for row in (await conn.execute(query)).mappings()]

        return await self._db.run(read, write=False)


def _token(row: Mapping[Any, Any]) -> ApiToken:
    return ApiToken(
        id=row["id"],
        name=row["name"],
        scope=TokenScope(row["scope"]),
        token_hash=row["token_hash"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


def _audit(row: Mapping[Any, Any]) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=row["at"],
        actor=row["actor"],
        action=row["action"],
        outcome=row["outcome"],
        job_id=row["job_id"],
        client=row["client"],
        detail=row["detail"],
    )
