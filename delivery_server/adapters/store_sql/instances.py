"""Live sending processes (``FleetStore``): each beats, all count the live ones, and the
lowest instance id counts the database gauges."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_server.adapters.store_sql.base import Queries
from delivery_server.adapters.store_sql.schema import instance
from delivery_server.ports import LiveInstances


class InstanceQueries(Queries):
    """One row per live process, refreshed by its heartbeat."""

    async def heartbeat_instance(
        self, instance_id: str, now: datetime, expire_before: datetime
    ) -> LiveInstances:
        """Record this process as alive at ``now``, forget processes not seen since
        ``expire_before``, and return the live ones (this one included)."""

        async def work(conn: AsyncConnection) -> LiveInstances:
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
            # The lowest id rides on the count the beat makes anyway: the gauges' leader
            # costs no query of its own.
            row = (
                await conn.execute(sa.select(sa.func.count(), sa.func.min(instance.c.instance_id)))
            ).one()
            return LiveInstances(int(row[0] or 0), str(row[1] or instance_id))

        return await self._db.run(work)

    async def lowest_live_instance(self, seen_since: datetime) -> str | None:
        """The lowest instance id seen since ``seen_since`` (a walk of the primary key
        that stops at the first live row); None when no process is live."""

        async def work(conn: AsyncConnection) -> str | None:
            lowest = await conn.scalar(
                sa.select(instance.c.instance_id)
                .where(instance.c.last_seen >= seen_since)
                .order_by(instance.c.instance_id)
                .limit(1)
            )
            return None if lowest is None else str(lowest)

        return await self._db.run(work, write=False)

    async def remove_instance(self, instance_id: str) -> None:
        """Forget this process (a clean shutdown: the others take over its share)."""

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(sa.delete(instance).where(instance.c.instance_id == instance_id))

        await self._db.run(work)
