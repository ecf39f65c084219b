"""Fault-injection scenarios (issue 4, item 6): real server processes on MariaDB and moto,
faults injected from outside (signals, a TCP proxy in front of MariaDB, an HTTP fault proxy
in front of SQS/SES), then what SES received is compared with the database.

Every scenario ends with 0 lost and 0 duplicated emails; ``unknown`` emails only where a
send was in flight at a fault, and every customer served once the operator resends them
(``jobs restart-failed --include-unknown``; the second copies are counted apart).

Scale: ``FAULTS_EMAILS`` emails per scenario (default 100, a few minutes for the suite);
by hand e.g. ``FAULTS_EMAILS=2000 FAULTS_SQS_OUTAGE=40 pytest tests/faults``.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.conftest import wait_for
from tests.faults.rig import FaultRig, faults_emails

EMAILS = faults_emails()
# Generous: a scenario takes 10-40 s at the default scale; the per-email part lets a
# hand-run at thousands of emails finish.
SETTLE = 90.0 + EMAILS * 0.2
TIMEOUT = int(240 + EMAILS * 0.5)

pytestmark = [pytest.mark.faults, pytest.mark.mariadb, pytest.mark.moto]

# The claim is the one statement that moves an email to ``sending``; recording a send
# is the one that moves it to ``sent``.
CLAIM_STATEMENT = b"SET status='sending'"
MARK_SENT_STATEMENT = b"SET status='sent'"


def _seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@pytest.mark.timeout(TIMEOUT)
def test_kill9_servers_every_few_seconds(rig: FaultRig) -> None:
    """Two servers; every couple of seconds one of them is killed with SIGKILL and
    started again. A killed server's claimed emails become unknown once their lease
    expires; its received messages (and those its last long poll takes at SQS after its
    death) come back after the visibility timeout."""
    interval = _seconds("FAULTS_KILL_INTERVAL", 2.0)
    max_kills = int(_seconds("FAULTS_MAX_KILLS", 30))
    env = rig.env(
        DELIVERY_LEASE_SECONDS="3",
        DELIVERY_CONCURRENCY="4",
        # A publisher killed mid-page rolls the page back: pages must take well under the
        # few seconds a server lives, or nothing is ever published.
        DELIVERY_PUBLISH_PAGE_SIZE="50",
    )
    rig.proxy.send_delay = 0.5  # the job lasts long enough for several kills
    servers = [rig.start(env), rig.start(env)]
    job = rig.create_job(EMAILS)
    in_flight: set[str] = set()
    kills = 0
    while kills < max_kills and rig.unhanded(job):
        time.sleep(interval)  # spacing out the faults, not waiting for an outcome
        victim = kills % 2
        servers[victim].kill()
        kills += 1
        # What the dead server held is now frozen in the database (a superset: the
        # other server's claims are in it too).
        in_flight |= rig.addresses(job, "sending")
        # Up again before the next kill: a loaded machine may take longer to start a
        # server than the interval, and two servers that never get going send nothing.
        servers[victim] = rig.start(env)
    rig.wait_settled(job, SETTLE)
    outcome = rig.check_after_resending_unknown(
        job,
        [s for s in servers if s.alive()],
        SETTLE,
        faults=kills,
        fault_kind="kill -9",
        in_flight=in_flight,
    )
    assert kills >= 2
    outcome.assert_clean()


@pytest.mark.timeout(TIMEOUT)
def test_ses_slower_than_visibility_timeout(rig: FaultRig) -> None:
    """Every SES send takes 3 s while the lease (and the SQS visibility timeout) is 2 s:
    each message comes back to a consumer while its send is still under way. The claim
    must refuse it, and the late answers must still be recorded as sent."""
    send_timeout = 10.0
    env = rig.env(
        DELIVERY_LEASE_SECONDS="2",
        DELIVERY_SEND_TIMEOUT=str(send_timeout),
        DELIVERY_CONCURRENCY="32",
    )
    rig.proxy.send_delay = 3.0
    servers = [rig.start(env), rig.start(env)]
    job = rig.create_job(EMAILS)
    # Every message comes back to a consumer every 2 s while its send is under way: at
    # thousands of emails that load slows moto down, so give this one more time.
    rig.wait_settled(job, TIMEOUT / 2, confirmed_sent=True)
    # On a loaded machine (thousands of emails through one moto) an answer can take
    # longer than the send timeout: the server gave up on those sends, which rightly
    # become unknown. Any other unknown is a bug.
    gave_up = {
        rcpt
        for send in list(rig.proxy.ses_log)
        if send.finished is None or send.finished - send.started > send_timeout - 0.5
        for rcpt in send.recipients
    }
    outcome = rig.check_after_resending_unknown(
        job,
        servers,
        SETTLE,
        faults=EMAILS,
        fault_kind="SES send 3 s > 2 s visibility",
        in_flight=gave_up,
        compare_sent_counter=True,
    )
    outcome.assert_clean()


@pytest.mark.timeout(TIMEOUT)
def test_ses_responses_dropped(rig: FaultRig) -> None:
    """One send in ten reaches SES, and then the connection drops without an answer. Those
    emails must become unknown (never resent blindly); the operator's
    ``restart-failed --include-unknown`` then serves everyone, the only second copies
    being those resends."""
    env = rig.env(DELIVERY_CONCURRENCY="8", DELIVERY_LEASE_SECONDS="30")
    rig.proxy.drop_fraction = 0.1
    server = rig.start(env)
    job = rig.create_job(EMAILS)
    assert rig.wait_settled(job, SETTLE) == "failed"
    dropped = set(rig.proxy.dropped)
    assert dropped, "no answer was dropped: the scenario injected nothing"
    unknown = rig.resend_unknown(job, SETTLE)  # by hand: the addresses are asserted below
    outcome = rig.check(
        job,
        faults=len(dropped),
        fault_kind="SES answer dropped after the send",
        unknown_seen=unknown,
        resent_unknown=unknown,
        in_flight=dropped,
        metrics=rig.settled_metrics([server], job),
        compare_sent_counter=True,
    )
    outcome.assert_clean()
    assert unknown == dropped
    assert outcome.resent_unknown == len(dropped)


@pytest.mark.timeout(TIMEOUT)
def test_database_connections_cut(rig: FaultRig) -> None:
    """Mid-job, every MariaDB connection of both servers is reset and new ones are refused
    for several seconds. Settling writes retry; nothing is lost or sent twice."""
    cut_seconds = _seconds("FAULTS_DB_CUT", 5.0)
    env = rig.env(
        through_tcp_proxy=True,
        DELIVERY_CONCURRENCY="8",
        # Settling writes retry for half a lease: longer than the cut.
        DELIVERY_LEASE_SECONDS=str(max(20.0, cut_seconds * 3)),
    )
    rig.proxy.send_delay = 0.2
    servers = [rig.start(env), rig.start(env)]
    job = rig.create_job(EMAILS)
    rig.wait_received(EMAILS // 3, SETTLE)
    tcp = rig.database_proxy()
    cut = tcp.cut(cut_seconds)
    in_flight = rig.addresses(job, "sending")
    wait_for(lambda: not tcp.blocked(), timeout=cut_seconds + 5, what="the end of the cut")
    rig.wait_settled(job, SETTLE + cut_seconds * 3)
    outcome = rig.check_after_resending_unknown(
        job,
        servers,
        SETTLE,
        faults=1,
        fault_kind=f"database cut {cut_seconds:g} s ({cut.dropped} connections)",
        in_flight=in_flight,
    )
    outcome.assert_clean()


@pytest.mark.timeout(TIMEOUT)
def test_claim_commit_answer_lost(rig: FaultRig) -> None:
    """The worst moment of a database cut: a claim commits, and the connection drops
    before the consumer hears it. The send had certainly not started, so DESIGN §4 wants
    the email back to ``queued`` and sent once, never ``unknown``."""
    env = rig.env(through_tcp_proxy=True, DELIVERY_CONCURRENCY="8", DELIVERY_LEASE_SECONDS="4")
    rig.proxy.send_delay = 0.1
    server = rig.start(env)
    tcp = rig.database_proxy()
    tcp.lose_commit_answers(3, CLAIM_STATEMENT)
    job = rig.create_job(EMAILS)
    rig.wait_settled(job, SETTLE)
    faults = list(tcp.lost_answers)
    assert len(faults) == 3, f"no claim statement contains {CLAIM_STATEMENT!r} any more"
    in_flight = {
        rcpt
        for moment in faults
        for send in rig.proxy.ses_in_flight(moment)
        for rcpt in send.recipients
    }
    outcome = rig.check_after_resending_unknown(
        job,
        [server],
        SETTLE,
        faults=len(faults),
        fault_kind="claim committed, its answer lost",
        in_flight=in_flight,
    )
    outcome.assert_clean()


@pytest.mark.timeout(TIMEOUT)
def test_mark_sent_commit_answer_lost(rig: FaultRig) -> None:
    """A send is recorded, and the connection drops before the consumer hears the commit:
    the consumer writes it again (the write is conditional, so the second one is a no-op)
    and the email stays ``sent``, neither unknown nor resent."""
    env = rig.env(through_tcp_proxy=True, DELIVERY_CONCURRENCY="8", DELIVERY_LEASE_SECONDS="4")
    rig.proxy.send_delay = 0.1
    server = rig.start(env)
    tcp = rig.database_proxy()
    tcp.lose_commit_answers(3, MARK_SENT_STATEMENT)
    job = rig.create_job(EMAILS)
    rig.wait_settled(job, SETTLE)
    assert len(tcp.lost_answers) == 3, f"no statement contains {MARK_SENT_STATEMENT!r} any more"
    outcome = rig.check(
        job,
        faults=len(tcp.lost_answers),
        fault_kind="send recorded, its answer lost",
        in_flight=0,
        metrics=rig.settled_metrics([server], job),
        compare_sent_counter=True,
    )
    outcome.assert_clean()


@pytest.mark.timeout(TIMEOUT)
def test_sqs_unreachable(rig: FaultRig) -> None:
    """Mid-job SQS is unreachable for ~15 s (tens of seconds by hand): first it answers
    503 to everything, then it closes every connection without an answer. Receives,
    deletes and publishes fail, sends in flight finish; the servers back off and resume."""
    outage = _seconds("FAULTS_SQS_OUTAGE", 15.0)
    env = rig.env(DELIVERY_CONCURRENCY="8", DELIVERY_LEASE_SECONDS="5")
    rig.proxy.send_delay = 0.2
    servers = [rig.start(env), rig.start(env)]
    job = rig.create_job(EMAILS)
    rig.wait_received(EMAILS // 3, SETTLE)
    for mode in ("503", "close"):
        rig.proxy.unreachable(outage / 2, mode)
        wait_for(lambda: not rig.proxy.is_unreachable(), timeout=outage, what="end of outage")
    rig.wait_settled(job, SETTLE + outage * 2)
    outcome = rig.check(
        job,
        faults=sum(rig.proxy.refused.values()),
        fault_kind=f"SQS unreachable {outage:g} s: 503, then closed (refused requests)",
        in_flight=0,
        metrics=rig.settled_metrics(servers, job),
        compare_sent_counter=True,
    )
    outcome.assert_clean()


@pytest.mark.timeout(TIMEOUT)
def test_publisher_killed_while_publishing(rig: FaultRig) -> None:
    """A ``--role publisher`` process is killed while a page of messages is out at SQS but
    its transaction (emails ``queued``) is not committed: the emails stay ``pending`` and
    the messages already in the queue are dropped by the claim. Restarted, it publishes
    them again; a ``--role consumer`` process sends each exactly once."""
    env = rig.env(DELIVERY_PUBLISH_PAGE_SIZE="20", DELIVERY_CONCURRENCY="8")
    # The answer to each SendMessageBatch is held: messages are in SQS while the
    # publisher's transaction is still open.
    rig.proxy.response_delay["SendMessageBatch"] = 0.5
    consumer = rig.start(env, ["--role", "consumer"])
    publisher = rig.start(env, ["--role", "publisher"])
    job = rig.create_job(EMAILS)
    kills = 0
    for _ in range(3):
        published = rig.proxy.actions["SendMessageBatch"]
        wait_for(
            lambda published=published: (
                rig.proxy.actions["SendMessageBatch"] >= published + 1
                or not rig.counts(job).get("pending")
            ),
            timeout=SETTLE,
            what="the publisher to publish",
        )
        if not rig.counts(job).get("pending"):
            break
        publisher.kill()
        kills += 1
        publisher = rig.start(env, ["--role", "publisher"])
    rig.wait_settled(job, SETTLE)
    outcome = rig.check(
        job,
        faults=kills,
        fault_kind="kill -9 of the publisher mid-publish",
        in_flight=0,
        metrics=rig.settled_metrics([consumer, publisher], job),
        compare_sent_counter=True,
    )
    assert kills >= 1
    outcome.assert_clean()


@pytest.mark.timeout(TIMEOUT)
def test_sigterm_mid_batch(rig: FaultRig) -> None:
    """Each of two servers gets SIGTERM with sends in flight and is started again: the
    sends finish within the grace period, unsent messages go back to the queue, the
    process exits 0. Nothing becomes unknown."""
    env = rig.env(
        DELIVERY_CONCURRENCY="8", DELIVERY_SHUTDOWN_GRACE="10", DELIVERY_LEASE_SECONDS="5"
    )
    rig.proxy.send_delay = 0.5
    servers = [rig.start(env), rig.start(env)]
    job = rig.create_job(EMAILS)
    signals = 0
    for victim, share in ((0, 4), (1, 2)):
        rig.wait_received(EMAILS // share, SETTLE)
        if not rig.proxy.ses_in_flight():
            continue
        assert servers[victim].stop() == 0
        signals += 1
        servers[victim] = rig.start(env)
    rig.wait_settled(job, SETTLE)
    outcome = rig.check(
        job,
        faults=signals,
        fault_kind="SIGTERM mid-batch (grace 10 s)",
        in_flight=0,
        metrics=rig.settled_metrics(servers, job),
    )
    assert signals >= 1
    outcome.assert_clean()


@pytest.mark.timeout(TIMEOUT)
def test_sigterm_grace_shorter_than_sends(rig: FaultRig) -> None:
    """SIGTERM while sends take longer than the grace period: the sends cut short may have
    reached SES, so they become unknown (at most the sends in flight); emails not yet
    sent go back to the queue. The operator's resend serves everyone."""
    # The grace stays longer than the 1 s long poll (a start-up check), shorter than a send.
    env = rig.env(
        DELIVERY_CONCURRENCY="8", DELIVERY_SHUTDOWN_GRACE="1.5", DELIVERY_LEASE_SECONDS="5"
    )
    rig.proxy.send_delay = 2.0
    server = rig.start(env)
    job = rig.create_job(EMAILS)
    wait_for(lambda: len(rig.proxy.ses_in_flight()) >= 4, SETTLE, what="sends in flight")
    sigterm_at = time.time()
    assert server.stop() == 0
    exited_at = time.time()
    # Sends cut short: under way at some moment between SIGTERM and the exit (an email
    # being prepared at SIGTERM may start its send during the grace period).
    in_flight = {
        rcpt
        for send in list(rig.proxy.ses_log)
        if send.started < exited_at and (send.finished is None or send.finished > sigterm_at)
        for rcpt in send.recipients
    }
    rig.proxy.send_delay = 0.2  # the fault is over: finish the job quickly
    server = rig.start(env)
    rig.wait_settled(job, SETTLE)
    outcome = rig.check_after_resending_unknown(
        job,
        [server],
        SETTLE,
        faults=1,
        fault_kind="SIGTERM, grace 1.5 s < 2 s sends",
        in_flight=in_flight,
    )
    outcome.assert_clean()


@pytest.mark.timeout(TIMEOUT)
def test_two_restart_failed_runs_at_once(rig: FaultRig) -> None:
    """A fifth of the emails are rejected for a few rounds; after each round two
    ``jobs restart-failed`` processes run at once. Each failed email is restarted by
    exactly one of them and sent exactly once when its rejection ends. (The server is
    stopped during the race: a running one would fail the restarted emails again at once,
    and the second run would rightly restart those new failures.)"""
    rounds = 2
    # A stopped server's long poll, cut short, can still take messages at SQS: they come
    # back after the visibility timeout (the lease), so keep it short.
    env = rig.env(DELIVERY_CONCURRENCY="8", DELIVERY_LEASE_SECONDS="5")
    rejected = {rig.address(n) for n in range(0, EMAILS, 5)}
    for address in rejected:
        rig.proxy.faults[address] = 400
        rig.proxy.fault_budget[address] = rounds
    server = rig.start(env)
    job = rig.create_job(EMAILS)
    for _ in range(rounds):
        assert rig.wait_settled(job, SETTLE) == "failed"
        assert rig.addresses(job, "failed") == rejected
        assert server.stop() == 0
        runs = [rig.cli("jobs", "restart-failed", str(job), "--json") for _ in range(2)]
        restarted = []
        for run in runs:
            out, err = run.communicate(timeout=60)
            assert run.returncode == 0, err
            restarted.append(json.loads(out)["restarted"])
        assert sum(restarted) == len(rejected), restarted
        assert rig.addresses(job, "pending") == rejected
        server = rig.start(env)
    assert rig.wait_settled(job, SETTLE) == "completed"
    outcome = rig.check(
        job,
        faults=rounds * 2,
        fault_kind="concurrent restart-failed runs",
        in_flight=0,
        metrics=rig.settled_metrics([server], job),
    )
    outcome.assert_clean()
    assert {rig.proxy.sends[address] for address in rejected} == {rounds + 1}
