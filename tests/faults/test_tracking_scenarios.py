"""Fault scenarios with tracking on (issue 10, point 4): SES's own events settle what a
fault left uncertain, without an operator's word.

The servers send through the AWS stand-in (``stand_in_rig``: SQS and SES on one endpoint,
behind the fault proxy), which publishes a ``Send`` and a ``Delivery`` event, tagged with
the email's id, for every email it accepts; every server runs a tracker on that queue.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest

from delivery_server.adapters.store_sql.base import LEASE_EXPIRED
from tests.conftest import wait_for
from tests.faults.rig import ACTIVE, faults_emails
from tests.faults.stand_in_rig import StandInRig
from tests.support.fault_proxy import FaultProxy
from tests.support.servers import ServerProcess

EMAILS = faults_emails()
SETTLE = 90.0 + EMAILS * 0.2
TIMEOUT = int(240 + EMAILS * 0.5)

pytestmark = [pytest.mark.faults, pytest.mark.mariadb]

SERVERS = 2  # each with a fault proxy of its own: a victim's sends are told apart
CONCURRENCY = 5  # send slots per server
SEND_SECONDS = 2.0  # each SES send is held this long at the proxy
RECEIVE_WAIT = 1.0  # the servers' long polls (server_env's DELIVERY_RECEIVE_WAIT)
# A kill lands only while each of the victim's sends has this long left before SES gets
# it. The long polls its tracker left parked at SQS are over by then: they would take
# the events of its sends, hidden for the tracker's 60 s visibility timeout (harmless,
# but the scenario would last a minute longer). And no send can be answered before the
# kill lands (its slot might claim its next email, whose send would not have started).
SEND_LEFT = RECEIVE_WAIT + 0.25
MID_SEND_WAIT = 10.0  # how long to look for such a moment


def _every_slot_mid_send(proxy: FaultProxy) -> set[str] | None:
    """The recipients of the SES sends under way at ``proxy`` (one server's), at a moment
    when each of the server's ``CONCURRENCY`` slots holds one with ``SEND_LEFT`` to go
    (so no email whose send has not reached SES); else None."""
    now = time.time()
    sends = proxy.ses_in_flight(now)
    late = [send for send in sends if send.started > now - (SEND_SECONDS - SEND_LEFT)]
    if len(sends) != CONCURRENCY or len(late) != len(sends):
        return None
    return {rcpt for send in sends for rcpt in send.recipients}


def _wait_every_slot_mid_send(proxy: FaultProxy) -> set[str] | None:
    """``_every_slot_mid_send`` as soon as it holds, or None after ``MID_SEND_WAIT``."""
    deadline = time.monotonic() + MID_SEND_WAIT
    while time.monotonic() < deadline:
        held = _every_slot_mid_send(proxy)
        if held is not None:
            return held
        time.sleep(0.01)  # the proxy's log is in this process: looking is cheap
    return None


def _wait_resolved(rig: StandInRig, job: int, timeout: float) -> set[str]:
    """Wait until the job is finished with no email in flight or ``unknown``; return the
    addresses seen ``unknown`` on the way (looked at every 0.1 s: the caller adds those
    that were ``unknown`` too briefly to be seen)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        seen |= rig.addresses(job, "unknown")
        counts = rig.counts(job)
        busy = any(counts.get(status, 0) for status in (*ACTIVE, "unknown"))
        if not busy and rig.job_status(job) != "processing" and not rig.ses_in_flight_anywhere():
            return seen
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout}s waiting for job {job}'s unknown emails to be "
                f"resolved: job {rig.job_status(job)}, emails {counts}, "
                f"events published {rig.events_published()}"
            )
        time.sleep(0.1)


def _lease_expired(rig: StandInRig, job: int) -> set[str]:
    """Emails the reconciler called ``unknown``: its ``last_error`` stays on them when
    an event makes them ``sent``."""
    rows = rig.query(
        "SELECT to_address FROM delivery_email WHERE job_id = %s AND last_error = %s",
        (job, LEASE_EXPIRED),
    )
    return {str(address) for (address,) in rows}


def _message_ids(rig: StandInRig, job: int) -> dict[str, str]:
    rows = rig.query(
        "SELECT to_address, provider_message_id FROM delivery_email WHERE job_id = %s", (job,)
    )
    return {str(address): str(message_id) for address, message_id in rows}


@dataclass
class _Servers:
    """The scenario's servers, each with its own fault proxy and settings."""

    proxies: list[FaultProxy]
    envs: list[dict[str, str]]
    processes: list[ServerProcess]

    @classmethod
    def start(cls, rig: StandInRig) -> _Servers:
        proxies = [rig.proxy, *(rig.add_proxy() for _ in range(SERVERS - 1))]
        envs = [
            rig.events_env(
                proxy,
                DELIVERY_LEASE_SECONDS="3",
                DELIVERY_CONCURRENCY=str(CONCURRENCY),
                DELIVERY_PUBLISH_PAGE_SIZE="50",
            )
            for proxy in proxies
        ]
        assert float(envs[0]["DELIVERY_RECEIVE_WAIT"]) == RECEIVE_WAIT
        for proxy in proxies:
            proxy.send_delay = SEND_SECONDS
        processes = [rig.start(env, wait=False) for env in envs]
        for process in processes:
            wait_for(process.healthy, timeout=60, what="server health")
        return cls(proxies, envs, processes)

    def kill_mid_send(
        self, rig: StandInRig, job: int, interval: float, max_kills: int
    ) -> list[set[str]]:
        """Kill the servers in turn, each when all its slots are mid-send, and start them
        again, until the job has too few emails left to fill every slot; return, per
        kill, the recipients of the sends the victim held."""
        held_by_victims: list[set[str]] = []
        while len(held_by_victims) < max_kills and rig.unhanded(job) >= SERVERS * CONCURRENCY:
            time.sleep(interval)  # spacing out the faults, not waiting for an outcome
            victim = len(held_by_victims) % SERVERS
            held = _wait_every_slot_mid_send(self.proxies[victim])
            if held is None:
                continue
            self.processes[victim].kill()
            held_by_victims.append(held)
            self.processes[victim] = rig.start(self.envs[victim])
        return held_by_victims


@pytest.mark.timeout(TIMEOUT)
def test_kill9_unknown_resolved_by_send_events(stand_in_rig: StandInRig) -> None:
    """Two servers with tracking on; again and again, at a moment when every send slot of
    one of them is mid-send (the request on its way to SES, no answer possible before the
    kill), that one is killed with SIGKILL (its tracker with it) and started again. Its
    sends reach SES all the same; its emails stay ``sending`` until their lease expires,
    the reconciler calls them ``unknown``, and the ``Send`` and ``Delivery`` events SES
    publishes for them (their ``email_id`` tag) make them ``sent`` with SES's message id.
    No ``restart-failed --include-unknown``: the job ends ``completed``, every customer
    served exactly once.

    Kills land only when no slot of the victim holds an email whose send has not
    started: SES never has such an email, no event will ever come for it, and it stays
    ``unknown`` until an operator resends it (``test_kill9_servers_every_few_seconds``)."""
    rig = stand_in_rig
    servers = _Servers.start(rig)
    job = rig.create_job(EMAILS)
    held_by_victims = servers.kill_mid_send(
        rig,
        job,
        interval=float(os.environ.get("FAULTS_KILL_INTERVAL", "2.0")),
        max_kills=int(os.environ.get("FAULTS_MAX_KILLS", "30")),
    )
    kills = len(held_by_victims)
    in_flight = set().union(*held_by_victims)
    unknown = _wait_resolved(rig, job, SETTLE) | _lease_expired(rig, job)
    outcome = rig.check(
        job,
        faults=kills,
        fault_kind="kill -9 mid-send, tracking on, no operator resend",
        unknown_seen=unknown,
        in_flight=in_flight,
        metrics=rig.settled_metrics(servers.processes, job),
    )
    assert kills >= 2
    outcome.assert_clean()
    assert rig.job_status(job) == "completed"
    assert rig.counts(job) == {"sent": EMAILS}
    # Every email sent under the message id SES gave it, those the events resolved too.
    assert _message_ids(rig, job) == rig.message_ids()
    # Each victim held a full set of sends on their way to SES: every one of them
    # became unknown, and SES's events made every one sent.
    assert unknown == in_flight
    assert outcome.resolved == len(unknown)
