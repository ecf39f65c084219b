"""One send rate for the whole fleet (issue: reliability, item 3), and one process of it
counting the database gauges (issue 14).

Every sending process beats in the database; each takes ``total / live`` of the account's
rate. A process that dies stops beating and its share returns to the others after
``EXPIRE_BEATS`` beats; a clean shutdown hands it back at once. The live process with the
lowest instance id counts the database gauges (``GaugeLeader``); the others leave them
out, since the counts are the same for all and cost the database per process.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from datetime import timedelta

import structlog

from delivery_server.heartbeats import Heartbeats
from delivery_server.loops import wait_or_stop
from delivery_server.models import utcnow
from delivery_server.ports import FleetStore
from delivery_server.sendgate import SendGate

log = structlog.get_logger(__name__)

LOOP_NAME = "fleet"
BEAT_SECONDS = 2.0
EXPIRE_BEATS = 3  # a process not seen for this many beats is gone


def new_instance_id() -> str:
    """An id for this process: host name for operators, random part for uniqueness."""
    return f"{socket.gethostname()[:40]}-{uuid.uuid4().hex[:12]}"


class FleetRate:
    """Keeps this process's share of ``total_rate`` up to date."""

    def __init__(
        self,
        store: FleetStore,
        gate: SendGate,
        heartbeats: Heartbeats,
        *,
        total_rate: float,
        beat_seconds: float = BEAT_SECONDS,
        instance_id: str | None = None,
    ) -> None:
        self._store = store
        self._gate = gate
        self._heartbeats = heartbeats
        self._total_rate = total_rate
        self.beat_seconds = beat_seconds
        self.instance_id = instance_id or new_instance_id()
        self.live = 0
        # The lowest live instance id at the last beat; None until a beat succeeds, and
        # again after one fails (this process's view of the fleet is then out of date).
        self.lowest: str | None = None

    async def beat_once(self) -> None:
        now = utcnow()
        self.lowest = None
        seen = await self._store.heartbeat_instance(
            self.instance_id, now, now - timedelta(seconds=self.beat_seconds * EXPIRE_BEATS)
        )
        self.lowest = seen.lowest
        live = max(seen.live, 1)
        if live != self.live:
            log.info("fleet_share", processes=live, share=round(self._total_rate / live, 2))
        self.live = live
        self._gate.set_max_rate(self._total_rate / live)

    async def join(self) -> None:
        """Take a share before the first send. A process joining a running fleet waits
        two beats first: by then every other process has seen it and shrunk its own
        share, so the shares never add up to more than the total."""
        await self.beat_once()
        if self.live > 1:
            # Two beats: a beat period stretches by the time the beat itself takes.
            await asyncio.sleep(self.beat_seconds * 2)
            await self.beat_once()

    async def run(self, stop: asyncio.Event) -> None:
        self._heartbeats.register(LOOP_NAME, allowance=self.beat_seconds * 6 + 30)
        try:
            while not stop.is_set():
                try:
                    await self.beat_once()
                except Exception as exc:  # keep the last share; the database may come back
                    log.warning("fleet_beat_failed", error=type(exc).__name__)
                self._heartbeats.beat(LOOP_NAME)
                await wait_or_stop(stop, self.beat_seconds)
        finally:
            self._heartbeats.unregister(LOOP_NAME)
            self.lowest = None
            try:
                await self._store.remove_instance(self.instance_id)
            except Exception as exc:  # it expires by itself
                log.warning("fleet_leave_failed", error=type(exc).__name__)


class GaugeLeader:
    """Whether this process counts the database gauges: the live process of the fleet
    with the lowest instance id does, the others leave the gauges out (dashboards and
    alerts read them with ``max``). A member of the fleet knows from its last beat; a
    process outside it (no send rate to share, or a role that does not send, or before
    its first beat) reads the lowest live id itself, and counts when there is none: a
    process without a fleet is its own leader.

    When the leader dies its row expires after ``EXPIRE_BEATS`` beats; the next lowest
    learns it at its following beat and counts at its next refresh."""

    def __init__(self, store: FleetStore, *, beat_seconds: float = BEAT_SECONDS) -> None:
        self._store = store
        self._expire_after = timedelta(seconds=beat_seconds * EXPIRE_BEATS)
        self.fleet: FleetRate | None = None

    async def leads(self) -> bool:
        fleet = self.fleet
        own = fleet.instance_id if fleet is not None else None
        lowest = fleet.lowest if fleet is not None else None
        if lowest is None:
            lowest = await self._store.lowest_live_instance(utcnow() - self._expire_after)
        return lowest is None or lowest == own
