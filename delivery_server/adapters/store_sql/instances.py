"""Live sending processes (``FleetStore``): each beats, all count the live ones."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import Queries
from delivery_server.adapters.store_sql.schema import instance


class InstanceQueries(Queries):
    """One row per live process, refreshed by its heartbeat."""

    async def heartbeat_instance(
        self, instance_id: str, now: datetime, expire_before: datetime
    ) -> int:
        """Record this process as alive at ``now``, forget processes not seen since
        ``expire_before``, and return how many are alive (this one included)."""

        async def work(conn: AsyncConnection) -> int:
            # UPDATE then INSERT: portable, and only this process writes its own row.
            seen = await conn.execute(
                sa.update(instance)
                .where(instance.c.instance_id == instance_id)
                .values(last_seen=now)
            )
            if seen.rowcount == 0:
                await conn.execute(
                    sa.insert(instance).values(instance_id=instance_id, last_seen=now)
                )
            await conn.execute(sa.delete(instance).where(instance.c.last_seen < expire_before))
            live = await conn.scalar(sa.select(sa.func.count()).select_from(instance))
            return int(live or 0)

        return await self._db.run(work)

    async def remove_instance(self, instance_id: str) -> None:
        """Forget this process (a clean shutdown: the others take over its share)."""

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(sa.delete(instance).where(instance.c.instance_id == instance_id))

        await self._db.run(work)
