"""Tracking in the bench: the SES events of every send, ingested by our servers' trackers.

With tracking on, the stand-in plays SES event publishing (``--events-queue``): for every
email it accepts it puts ``Send`` and then ``Delivery`` on its events queue as SNS
envelopes, and ``Bounce`` instead of ``Delivery`` for ``--bounce-rate`` of them (1 %). Our
servers consume that queue (``DELIVERY_EVENTS_QUEUE_URL``: ``run --role all`` runs a
tracker beside the consumers). What is measured, and checked, once the job has finished:

* **events/s**: ``delivery_event`` rows of the job / the span from the first row's
  ``received_at`` to the last's (both the servers' clock: the ingestion rate while the
  sends go on, bound by the send rate when the tracker keeps up);
* **drain**: from the job's end to the moment every published event is recorded (the run
  waits for that, bounded by ``--timeout``; a tracker that keeps up drains in a moment);
* **complete**: every event the stand-in published recorded once, the stand-in's bounce
  draws ``bounced`` in the database and every other email ``delivered``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from bench.processes import ServerProcesses
from bench.stand_in import SimulatorProcess
from bench.workload import Workload

EVENTS_QUEUE = "bench-ses-events"
DEFAULT_BOUNCE_RATE = 0.01
# The stand-in's event counts also hold these tallies, which are not event types.
TALLIES = frozenset({"emails", "bounced_by_rate", "dropped"})
DRAIN_POLL = 0.2
PROGRESS_EVERY = 10.0


def published(sim: SimulatorProcess) -> dict[str, int]:
    """What the stand-in published so far: events by type, plus its tallies."""
    return {key: int(n) for key, n in sim.control("/_sim/stats").get("events", {}).items()}


def event_total(counts: dict[str, int]) -> int:
    return sum(n for key, n in counts.items() if key not in TALLIES)


def recorded(work: Workload) -> tuple[int, float | None]:
    """The job's recorded events, and their span (first to last ``received_at``) in s."""
    with work.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*), MIN(received_at), MAX(received_at) FROM delivery_event"
            " WHERE job_id = %s",
            (work.job_id,),
        )
        count, first, last = cur.fetchone()
    span = (last - first).total_seconds() if count else None
    return int(count), span


def wait_ingested(
    work: Workload, sim: SimulatorProcess, servers: ServerProcesses, deadline: float
) -> float | None:
    """Wait until the stand-in has published the events of every email it accepted and
    our servers recorded them all; return how long that took (None: not by ``deadline``)."""
    started = next_progress = time.monotonic()
    accepted = sim.sent_count()
    while time.monotonic() < deadline:
        counts = published(sim)
        count, _ = recorded(work)
        if counts.get("emails", 0) >= accepted and count >= event_total(counts):
            return time.monotonic() - started
        servers.check_alive()
        if time.monotonic() >= next_progress:
            next_progress += PROGRESS_EVERY
            print(f"  events: {count:,} / {event_total(counts):,} recorded", file=sys.stderr)
        time.sleep(DRAIN_POLL)
    return None


def delivery_counts(work: Workload) -> dict[str, int]:
    """The job's emails by delivery status (``none``: no report)."""
    with work.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT delivery_status, COUNT(*) FROM delivery_email WHERE job_id = %s"
            " GROUP BY delivery_status",
            (work.job_id,),
        )
        return {str(status or "none"): int(n) for status, n in cur.fetchall()}


def figures(
    work: Workload, sim: SimulatorProcess, servers: ServerProcesses, drain_s: float | None
) -> dict[str, Any]:
    """The tracking figures of a finished, drained run (servers still up: their metrics)."""
    counts = published(sim)
    count, span = recorded(work)
    by_status = delivery_counts(work)
    bounced = counts.get("bounced_by_rate", 0)
    complete = (
        drain_s is not None
        and count == event_total(counts)
        and counts.get("dropped", 0) == 0
        and by_status.get("bounced", 0) == bounced
        and by_status.get("delivered", 0) == work.emails - bounced
    )
    return {
        "events_published": event_total(counts),
        "events_by_type": {k: n for k, n in counts.items() if k not in TALLIES},
        "events_recorded": count,
        "events_span_s": round(span, 3) if span is not None else None,
        "events_per_s": round(count / span, 1) if span else None,
        "drain_s": round(drain_s, 2) if drain_s is not None else None,
        "bounced_by_rate": bounced,
        "delivery_counts": by_status,
        "event_outcomes": servers.counter_totals("delivery_event_outcomes", "outcome"),
        "tracking_complete": complete,
    }
