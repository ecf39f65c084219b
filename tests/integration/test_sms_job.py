"""An sms job end to end: MariaDB, SQS and SNS on moto, the server in this loop.

One job holds a good number, an opted-out one (moto: ending in 99), an invalid one
inserted past the import (as an upstream system could), a body over the segment cap and
a 10 MB variable: each bad one fails (or is suppressed) alone, with a clear reason.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from delivery_server.email_listing import EmailFilter
from delivery_server.models import EmailStatus, JobStatus, NewEmail, Template
from tests.integration.harness import (
    FROM_ADDRESS,
    RunningServer,
    aws_settings,
    create_sqs_queue,
    prepared_store,
    wait_for_job,
)

pytestmark = pytest.mark.timeout(120)

NOTICE = Template(
    name="notice",
    locale="en",
    version=0,
    subject="",
    text_body="",
    sms_body="Hi {{ name }}, your statement is ready.",
)


def sent_sms(endpoint: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=10) as response:
        data: dict[str, Any] = json.load(response)
    return list(data.get("sns", {}).get("SMS", []))


async def test_an_sms_job_sends_suppresses_and_fails_each_alone(
    mariadb_url: str, moto: str, tmp_path: Path
) -> None:
    queue_url = create_sqs_queue(moto)
    settings = aws_settings(mariadb_url, moto, queue_url, tmp_path, sms_max_segments=1)
    recipients = [
        NewEmail("+14155550100", {"name": "Ann"}),
        NewEmail("+14155550199", {"name": "Bob"}),  # opted out at SNS
        NewEmail("+1415555", {"name": "Cy"}),  # not E.164: 7 digits
        NewEmail("+14155550101", {"name": "ç" * 80}),  # UCS-2, 2 segments: over the cap
        NewEmail("+14155550102", {"name": "x" * (10 * 1024 * 1024)}),  # a 10 MB body
    ]
    async with prepared_store(settings) as store:
        await store.add_template(NOTICE)
        job = await store.create_job("sms", NOTICE.name, FROM_ADDRESS, channel="sms")
        await store.add_emails(job.id, recipients)
        await store.set_job_status(job.id, JobStatus.PROCESSING, [JobStatus.DRAFT])
        async with RunningServer(settings):
            finished = await wait_for_job(store, job.id)
        page = await store.email_page(job.id, EmailFilter(), limit=10)
        emails = {row.to_address: row for row in page}
        listed = {entry.address for entry in await store.suppressions(limit=10)}

    assert finished.status is JobStatus.FAILED
    good = emails["+14155550100"]
    assert good.status is EmailStatus.SENT
    assert good.segments == 1  # recorded with the send
    assert sent_sms(moto) == [
        {
            "message_id": good.provider_message_id,
            "phone_number": "+14155550100",
            "message": "Hi Ann, your statement is ready.",
        }
    ]
    opted_out = emails["+14155550199"]
    assert opted_out.status is EmailStatus.SUPPRESSED
    assert "+14155550199" in listed
    reasons = {
        "+1415555": "8 to 15 digits",
        "+14155550101": "2 segments (UCS-2), over the job's cap of 1",
        "+14155550102": "over the",
    }
    for phone, reason in reasons.items():
        assert emails[phone].status is EmailStatus.FAILED, phone
        assert reason in (emails[phone].last_error or ""), phone
        assert phone.lstrip("+") not in (emails[phone].last_error or "")


async def test_a_jobs_own_cap_overrides_the_setting_and_each_send_records_its_segments(
    mariadb_url: str, moto: str, tmp_path: Path
) -> None:
    queue_url = create_sqs_queue(moto)
    settings = aws_settings(mariadb_url, moto, queue_url, tmp_path, sms_max_segments=1)
    # The body's fixed text is 29 GSM-7 characters; a longer SMS goes in parts of 153.
    recipients = [
        NewEmail("+14155550100", {"name": "a" * 200}),  # 229 septets: 2 segments
        NewEmail("+14155550101", {"name": "b" * 300}),  # 329 septets: 3 segments
        NewEmail("+14155550102", {"name": "Ann"}),  # 1 segment
    ]
    async with prepared_store(settings) as store:
        await store.add_template(NOTICE)
        job = await store.create_job(
            "sms", NOTICE.name, FROM_ADDRESS, channel="sms", max_segments=2
        )
        await store.add_emails(job.id, recipients)
        await store.set_job_status(job.id, JobStatus.PROCESSING, [JobStatus.DRAFT])
        async with RunningServer(settings):
            await wait_for_job(store, job.id)
        page = await store.email_page(job.id, EmailFilter(), limit=10)
        emails = {row.to_address: row for row in page}

    assert (emails["+14155550100"].status, emails["+14155550100"].segments) == (
        EmailStatus.SENT,
        2,
    )
    assert (emails["+14155550102"].status, emails["+14155550102"].segments) == (
        EmailStatus.SENT,
        1,
    )
    over = emails["+14155550101"]
    assert (over.status, over.segments) == (EmailStatus.FAILED, None)
    assert "3 segments (GSM-7), over the job's cap of 2 (--max-segments)" in (over.last_error or "")
    assert len(sent_sms(moto)) == 2
