"""Tracking through real components (issue 10, "How it is checked", the SQS path).

MariaDB, moto's SES and SQS, and ``serve()`` running the tracker on an events queue the
test creates. Emails are sent through moto's SES by the server; the SES events about them
are shaped like AWS's examples (``tests.support.ses_events``) and published with boto3 in
each of the three forms AWS delivers: an SNS notification, SNS raw delivery, EventBridge.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from delivery_server.adapters.aws.sqs import open_sqs_queue
from delivery_server.brake import BrakeThresholds
from delivery_server.cli import main
from delivery_server.heartbeats import Heartbeats
from delivery_server.metrics import Metrics
from delivery_server.models import DeliveryStatus, EmailStatus, JobStatus
from delivery_server.tracker import EventRecorder, Tracker
from tests.integration.harness import (
    RunningServer,
    aws_settings,
    create_job,
    create_sqs_queue,
    customer,
    http_get,
    prepared_store,
    verify_sender,
    wait_for_job,
    wait_until,
)
from tests.support.events_queue import create_events_queue, publish, queue_depth
from tests.support.observed import Database, sample, samples, scrape
from tests.support.ses_events import (
    ENVELOPES,
    as_identity_notification,
    bounce_event,
    click_event,
    complaint_event,
    delivery_delay_event,
    delivery_event,
    eventbridge_event,
    open_event,
    raw_message,
    reject_event,
    send_event,
    sns_envelope,
)
from tests.support.tracked_emails import (
    OUTCOMES,
    Builder,
    Rig,
    event_counts,
    forget_sends,
    outcomes,
    recipients,
    record_sends,
    send_job,
    sending_email,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def rig(mariadb_url: str, moto: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Rig:
    verify_sender(moto)
    events_url = create_events_queue(moto)
    settings = aws_settings(
        mariadb_url, moto, create_sqs_queue(moto), tmp_path, events_queue_url=events_url
    )
    monkeypatch.setenv("DELIVERY_DATABASE_URL", mariadb_url)  # for the commands run
    return Rig(moto, events_url, settings, Database(mariadb_url))


async def show_job(capsys: pytest.CaptureFixture[str], job_id: int) -> Any:
    """``jobs show JOB --json``, run as an operator would (its own event loop)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["jobs", "show", str(job_id), "--json"])
    assert code == 0
    return json.loads(capsys.readouterr().out)


@dataclass(frozen=True)
class Scenario:
    """The events one email gets, and what it must show afterwards."""

    builders: tuple[Builder, ...]
    status: str
    detail: str
    suppressed: str | None = None
    engaged: bool = False  # opened and clicked


SCENARIOS = (
    Scenario((send_event, delivery_event, open_event, click_event), "delivered", "250 2.6.0",
             engaged=True),
    Scenario((send_event, bounce_event), "bounced", "Permanent/General", "hard_bounce"),
    Scenario((send_event, partial(bounce_event, bounce_type="Transient")), "bounced",
             "Transient/MailboxFull"),
    Scenario((send_event, delivery_event, complaint_event), "complained", "abuse", "complaint"),
    Scenario((send_event, delivery_delay_event), "delayed", "TransientCommunicationFailure 4.4.1"),
    Scenario((send_event, reject_event), "rejected", "Bad content"),
)  # fmt: skip


def every_delivery_status(counts: Counter[str]) -> dict[str, int]:
    return {str(status): counts.get(status, 0) for status in DeliveryStatus}


async def test_every_event_type_in_every_envelope_reaches_its_email(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = [(envelope, scenario) for envelope in ENVELOPES for scenario in SCENARIOS]
    async with prepared_store(rig.settings) as store, RunningServer(rig.settings) as server:
        sent = await send_job(rig, store, len(plan), "tracked.example")
        published = [
            (mail, event, ENVELOPES[envelope](event))
            for mail, (envelope, scenario) in zip(sent, plan, strict=True)
            for event in (mail.event(builder) for builder in scenario.builders)
        ]
        await rig.publish(*(body for _, _, body in published))
        await wait_until(lambda: len(rig.db.events()) == len(published), what="events stored")
        wanted = every_delivery_status(Counter(scenario.status for _, scenario in plan))
        await wait_until(
            lambda: (
                samples(scrape(server.http_port), "delivery_emails_delivery", "status") == wanted
            ),
            what="the delivery gauge refreshed",
        )
        metrics = await asyncio.to_thread(scrape, server.http_port)

    job_id = sent[0].job_id
    for row, (_, scenario) in zip(rig.db.emails(job_id), plan, strict=True):
        assert row["status"] == "sent"
        assert (row["delivery_status"], row["delivery_detail"]) == (
            scenario.status,
            scenario.detail,
        )
        engaged = (row["opened_at"] is not None, row["clicked_at"] is not None)
        assert engaged == (scenario.engaged, scenario.engaged)
    assert event_counts(rig.db) == Counter((mail.id, e["eventType"]) for mail, e, _ in published)
    for stored in rig.db.events():
        assert stored["job_id"] == job_id
        # No recipient data kept beyond SES's: no address, no link query string.
        assert "@" not in str(stored["detail"])
        assert "customer=" not in str(stored["detail"])
    assert rig.db.suppressions() == {
        mail.address: scenario.suppressed
        for mail, (_, scenario) in zip(sent, plan, strict=True)
        if scenario.suppressed
    }
    assert samples(metrics, "delivery_events_total", "type") == {
        "Send": 18, "Delivery": 6, "Bounce": 6, "Complaint": 3, "DeliveryDelay": 3,
        "Reject": 3, "Open": 3, "Click": 3,
    }  # fmt: skip
    outcomes = samples(metrics, OUTCOMES, "outcome")
    assert outcomes.pop("recorded") == len(published)
    # SQS delivers at least once (moto too, to concurrent long polls): a message received
    # twice is a duplicate, recorded once; nothing else.
    assert set(outcomes) <= {"duplicate"}
    shown = await show_job(capsys, job_id)
    assert shown["delivery_counts"] == wanted


async def test_duplicates_are_no_ops_status_moves_forward_and_an_early_event_waits(
    rig: Rig,
) -> None:
    async with prepared_store(rig.settings) as store, RunningServer(rig.settings) as server:
        a, b, c = await send_job(rig, store, 3, "order.example")
        early = await sending_email(rig, store)
        a_delivered = a.event(delivery_event)
        await rig.publish(
            sns_envelope(a_delivered),
            sns_envelope(a_delivered),  # the same event twice
            raw_message(b.event(complaint_event)),
            eventbridge_event(c.event(delivery_event)),
            raw_message(early.event(delivery_event)),
        )
        await wait_until(
            lambda: (
                outcomes(server.http_port).get("early", 0) >= 1
                and sum(event_counts(rig.db).values()) == 3
            ),
            what="three events recorded and one kept for later",
        )
        # Later: the same event again (an SNS retry, in another envelope), a Delivery
        # after the complaint, a DeliveryDelay after the delivery.
        await rig.publish(
            raw_message(a_delivered),
            sns_envelope(b.event(delivery_event)),
            eventbridge_event(c.event(delivery_delay_event)),
        )
        await wait_until(
            lambda: outcomes(server.http_port).get("recorded") == 5,
            what="the late events recorded",
        )
        assert (await asyncio.to_thread(outcomes, server.http_port))["duplicate"] == 2
        assert event_counts(rig.db) == {
            (a.id, "Delivery"): 1,
            (b.id, "Complaint"): 1,
            (b.id, "Delivery"): 1,
            (c.id, "Delivery"): 1,
            (c.id, "DeliveryDelay"): 1,
        }
        delivery = [
            (row["delivery_status"], row["delivery_detail"]) for row in rig.db.emails(a.job_id)
        ]
        assert delivery == [
            ("delivered", "250 2.6.0"),
            ("complained", "abuse"),
            ("delivered", "250 2.6.0"),
        ]
        assert rig.db.email(early.id)["delivery_status"] is None

        # The send record lands: the event the queue kept is applied, once.
        await store.mark_sent(early.id, early.message_id, early.sent_at)
        await wait_until(
            lambda: rig.db.email(early.id)["delivery_status"] == "delivered",
            what="the early event applied",
        )
        assert event_counts(rig.db)[(early.id, "Delivery")] == 1
        assert await asyncio.to_thread(queue_depth, rig.moto, rig.events_url) == 0


MALFORMED = (
    "{not json",
    "[1, 2]",
    sns_envelope("not json either"),
    raw_message({"eventType": "Delivery"}),  # no mail object
    json.dumps({"source": "aws.ec2", "detail-type": "EC2 Instance State", "detail": {}}),
)


async def test_bad_messages_are_counted_and_the_valid_stream_goes_on(rig: Rig) -> None:
    async with prepared_store(rig.settings) as store, RunningServer(rig.settings) as server:
        known, bounced = await send_job(rig, store, 2, "input.example")
        # Above the tracker's 256 KiB: no SES event is that large (the queue takes 1 MiB).
        huge = raw_message({**known.event(open_event), "padding": "x" * (300 * 1024)})
        with capture_logs() as logs:
            await rig.publish(
                *MALFORMED,
                huge,
                raw_message(send_event("not-one-of-ours-1")),  # no tags, unknown message id
                sns_envelope(delivery_event("not-one-of-ours-2", email_id=987654, job_id=987654)),
                # An identity notification carries no tags: matched by its message id.
                sns_envelope(as_identity_notification(known.event(delivery_event))),
                eventbridge_event(bounced.event(bounce_event)),
            )
            await wait_until(
                lambda: (
                    outcomes(server.http_port)
                    == {"malformed": len(MALFORMED) + 1, "unmatched": 2, "recorded": 2}
                ),
                what="every message counted",
            )
            # The tracker goes on: a valid event published after them is applied.
            await rig.publish(sns_envelope(known.event(click_event)))
            await wait_until(
                lambda: rig.db.email(known.id)["clicked_at"] is not None, what="a later event"
            )
            status, _ = await http_get(server.http_port, "/healthz")
            assert status == 200

    assert (
        rig.db.email(known.id)["delivery_status"],
        rig.db.email(bounced.id)["delivery_status"],
    ) == (
        "delivered",
        "bounced",
    )
    stored = {(row["email_id"], row["job_id"], row["event_type"]) for row in rig.db.events()}
    assert stored == {
        (None, None, "Send"),
        (None, 987654, "Delivery"),
        (known.id, known.job_id, "Delivery"),
        (known.id, known.job_id, "Click"),
        (bounced.id, bounced.job_id, "Bounce"),
    }
    reasons = [entry["reason"] for entry in logs if entry["event"] == "event_malformed"]
    assert len(reasons) == len(MALFORMED) + 1
    assert "event message is larger than 256 KiB" in reasons
    assert not any("@" in str(entry) for entry in logs)


async def test_a_malformed_message_is_deleted_after_its_receive_limit(
    mariadb_url: str, moto: str, tmp_path: Path
) -> None:
    url = create_events_queue(moto, "ses-events-limits")
    settings = aws_settings(mariadb_url, moto, url, tmp_path)
    metrics = Metrics()
    bodies = ["{not json", raw_message({"eventType": "Send"}), sns_envelope(send_event("gone-1"))]
    async with (
        prepared_store(settings) as store,
        open_sqs_queue(url, endpoint_url=moto) as queue,
    ):
        recorder = EventRecorder(store, metrics, BrakeThresholds())
        tracker = Tracker(
            queue, recorder, Heartbeats(), metrics,
            fetchers=2, wait_seconds=0.5, visibility_timeout=1, max_receives=3,
        )  # fmt: skip
        await asyncio.to_thread(publish, moto, url, bodies)
        stop = asyncio.Event()
        running = asyncio.create_task(tracker.run(stop))
        try:
            await wait_until(lambda: queue_depth(moto, url) == 0, what="every message deleted")
        finally:
            stop.set()
            await asyncio.wait_for(running, timeout=10)
    # Each malformed message was received (and counted) three times, then deleted.
    assert samples(metrics.render().decode(), OUTCOMES, "outcome") == {
        "malformed": 2 * 3,
        "unmatched": 1,
    }


BRAKE_REASON = re.compile(
    r"reputation brake: bounce rate (\d+\.\d)% \((\d+) of 200 sent\) reached 5\.0%"
)


async def test_the_brake_pauses_a_job_at_15_percent_hard_bounces_until_resumed(rig: Rig) -> None:
    async with prepared_store(rig.settings) as store:
        job = await create_job(store, [customer(n, "brake.example") for n in range(240)])
        sent = await asyncio.to_thread(record_sends, rig.db, job.id, 200)
        hard = [sns_envelope(mail.event(bounce_event)) for mail in sent[:30]]  # 15 %
        soft = [
            raw_message(mail.event(partial(bounce_event, bounce_type="Transient")))
            for mail in sent[30:60]
        ]
        # The tracker alone: nothing else would send the job's other 40 emails meanwhile.
        with capture_logs() as logs:
            async with RunningServer(rig.settings, role="tracker") as tracker:
                await rig.publish(*soft, *hard)
                await wait_until(
                    lambda: outcomes(tracker.http_port).get("recorded") == 60,
                    what="the bounces recorded",
                )
                metrics = await asyncio.to_thread(scrape, tracker.http_port)
        braked = await store.job(job.id)
        assert braked.status is JobStatus.PAUSED
        assert braked.paused_reason is not None
        reason = BRAKE_REASON.fullmatch(braked.paused_reason)
        assert reason, braked.paused_reason
        # Judged on permanent bounces only, as soon as they reached 5 % of the sends.
        assert 10 <= int(reason.group(2)) <= 30
        assert sample(metrics, "delivery_jobs_braked_total") == 1
        [alert] = [entry for entry in logs if entry["event"] == "job_braked"]
        assert alert["job_id"] == job.id
        assert alert["bounce_rate"] >= 0.05

        # A whole server: another job goes out, the braked one does not.
        witness = await create_job(store, [customer(n, "witness.example") for n in range(3)])
        async with RunningServer(rig.settings):
            assert (await wait_for_job(store, witness.id)).status is JobStatus.COMPLETED
            summary = await store.job_summary(job.id)
            assert summary.job.status is JobStatus.PAUSED
            assert {str(k): v for k, v in summary.counts.items() if v} == {
                "sent": 200,
                "pending": 40,
            }
            assert not recipients(rig.moto, "@brake.example")

            # An operator's word lets it go on.
            assert await asyncio.to_thread(main, ["jobs", "resume", str(job.id)]) == 0
            done = await wait_for_job(store, job.id)
        assert (done.status, done.sent_count, done.paused_reason) == (
            JobStatus.COMPLETED,
            240,
            None,
        )
    assert recipients(rig.moto, "@brake.example") == {
        f"c{n}@brake.example": 1 for n in range(200, 240)
    }


async def test_unknown_emails_are_resolved_by_ses_send_events_alone(rig: Rig) -> None:
    async with prepared_store(rig.settings) as store:
        async with RunningServer(rig.settings):
            sent = await send_job(rig, store, 4, "unknown.example")
        lost = sent[:2]
        await asyncio.to_thread(forget_sends, rig.db, lost)
        async with RunningServer(rig.settings):
            # The reconciler finds their leases run out: unknown, and the job failed.
            failed = await wait_for_job(store, sent[0].job_id, done=[JobStatus.FAILED])
            assert (await store.job_summary(failed.id)).counts[EmailStatus.UNKNOWN] == 2
            # SES's own Send events, one in each of two envelopes, settle them.
            await rig.publish(
                sns_envelope(lost[0].event(send_event)),
                eventbridge_event(lost[1].event(send_event)),
            )
            done = await wait_for_job(store, failed.id, done=[JobStatus.COMPLETED])
        assert (done.sent_count, done.failed_count) == (4, 0)
    rows = {row["id"]: row for row in rig.db.emails(done.id)}
    for mail in lost:
        assert (rows[mail.id]["status"], rows[mail.id]["provider_message_id"]) == (
            "sent",
            mail.message_id,
        )
    # Not one of them was sent again.
    assert recipients(rig.moto, "@unknown.example") == {mail.address: 1 for mail in sent}
