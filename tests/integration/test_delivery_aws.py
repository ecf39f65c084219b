"""The core pipeline end to end on real MariaDB, moto SQS and moto SES (issue: core)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from delivery_server.models import AttachmentRef, EmailStatus, JobStatus, NewEmail
from tests.integration.harness import (
    RunningServer,
    aws_settings,
    create_job,
    create_sqs_queue,
    customer,
    http_get,
    moto_sent,
    prepared_store,
    verify_sender,
    wait_for_job,
)
from tests.support.fault_proxy import FaultProxy

pytestmark = pytest.mark.timeout(180)


def make_statement(directory: Path, n: int) -> bytes:
    data = b"%PDF-1.4\n% statement of customer " + str(n).encode() + b"\n" + bytes(range(256)) * 8
    (directory / f"statement-{n}.pdf").write_bytes(data)
    return data


def metric_value(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def test_a_job_of_a_few_hundred_emails_is_sent_once_each_and_rendered(
    mariadb_url: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    verify_sender(proxy.upstream)
    settings = aws_settings(mariadb_url, proxy.endpoint, create_sqs_queue(proxy.upstream), tmp_path)
    statements = {}
    emails = []
    for n in range(240):
        if n % 10 == 0:
            statements[n] = make_statement(tmp_path, n)
            ref = AttachmentRef(f"file:statement-{n}.pdf", f"statement-{n}.pdf", "application/pdf")
            emails.append(customer(n, attachments=(ref,)))
        else:
            emails.append(customer(n))
    async with prepared_store(settings) as store:
        job = await create_job(store, emails)
        async with RunningServer(settings) as server:
            done = await wait_for_job(store, job.id, timeout=150)
            status, metrics = await http_get(server.http_port, "/metrics")
            assert status == 200
        assert (done.status, done.sent_count, done.failed_count) == (JobStatus.COMPLETED, 240, 0)
        summary = await store.job_summary(job.id)
        assert summary.counts.get(EmailStatus.SENT) == 240

    assert metric_value(metrics, "delivery_emails_sent_total") == 240
    assert metric_value(metrics, "delivery_emails_failed_total") == 0

    received = moto_sent(proxy.upstream)
    by_recipient = {}
    for mail in received:
        assert len(mail.to) == 1
        assert mail.to[0] not in by_recipient, f"{mail.to[0]} received twice"
        by_recipient[mail.to[0]] = mail
    assert len(by_recipient) == 240
    for n in range(240):
        mail = by_recipient[f"c{n}@customers.example"]
        assert mail.subject == f"Statement 2026 for Customer {n}"
        balance = f"{n * 7 % 1000}.{n % 100:02d}"
        if n in statements:
            assert mail.raw is not None
            text = mail.raw.get_body(("plain",))
            assert text is not None
            assert balance in text.get_content()
            [attachment] = list(mail.raw.iter_attachments())
            assert attachment.get_filename() == f"statement-{n}.pdf"
            assert attachment.get_content() == statements[n]
        else:
            assert f"Balance on DE{n:08d}: {balance}" in mail.body


async def test_retryable_faults_take_three_attempts_then_restart_resends_only_those(
    mariadb_url: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    verify_sender(proxy.upstream)
    settings = aws_settings(mariadb_url, proxy.endpoint, create_sqs_queue(proxy.upstream), tmp_path)
    proxy.faults = {"c3@customers.example": 500, "c7@customers.example": 500}
    async with prepared_store(settings) as store:
        job = await create_job(store, [customer(n) for n in range(10)])
        async with RunningServer(settings):
            done = await wait_for_job(store, job.id)
        assert (done.status, done.sent_count, done.failed_count) == (JobStatus.FAILED, 8, 2)
        assert proxy.sends["c3@customers.example"] == 3
        assert proxy.sends["c7@customers.example"] == 3
        summary = await store.job_summary(job.id)
        assert summary.counts[EmailStatus.FAILED] == 2
        assert any("InternalFailure" in err or "500" in err for _, err in summary.last_errors)

        proxy.faults = {}
        async with RunningServer(settings, restart_failed=True):
            done = await wait_for_job(store, job.id, done=[JobStatus.COMPLETED])
        assert (done.sent_count, done.failed_count) == (10, 0)

    assert proxy.sends["c3@customers.example"] == 4
    assert all(proxy.sends[f"c{n}@customers.example"] == 1 for n in range(10) if n not in (3, 7))
    recipients = sorted(mail.to[0] for mail in moto_sent(proxy.upstream))
    assert recipients == sorted(f"c{n}@customers.example" for n in range(10))


async def test_permanent_errors_fail_at_once(
    mariadb_url: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    verify_sender(proxy.upstream)
    settings = aws_settings(mariadb_url, proxy.endpoint, create_sqs_queue(proxy.upstream), tmp_path)
    proxy.faults = {"c1@customers.example": 400}
    missing_variable = NewEmail(to_address="c2@customers.example", variables={"name": "No Balance"})
    invalid_address = NewEmail(to_address="not-an-address", variables=customer(3).variables)
    injection = customer(4)
    injection = NewEmail(
        to_address=injection.to_address,
        variables={**injection.variables, "name": "x\r\nBcc: thief@evil.example"},
    )
    outside = customer(5, attachments=(AttachmentRef("file:../../etc/passwd", "p.pdf"),))
    async with prepared_store(settings) as store:
        job = await create_job(
            store, [customer(0), customer(1), missing_variable, invalid_address, injection, outside]
        )
        async with RunningServer(settings):
            done = await wait_for_job(store, job.id)
        assert (done.status, done.sent_count, done.failed_count) == (JobStatus.FAILED, 1, 5)
        summary = await store.job_summary(job.id)
        errors = " | ".join(err for _, err in summary.last_errors)
        for expected in ("MessageRejected", "undefined", "address", "line break", "attachment"):
            assert expected.lower() in errors.lower(), expected
    assert proxy.sends["c1@customers.example"] == 1
    assert [mail.to[0] for mail in moto_sent(proxy.upstream)] == ["c0@customers.example"]


async def test_throttling_is_not_an_attempt(
    mariadb_url: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    verify_sender(proxy.upstream)
    settings = aws_settings(mariadb_url, proxy.endpoint, create_sqs_queue(proxy.upstream), tmp_path)
    proxy.faults = {"c1@customers.example": 429}
    proxy.fault_budget = {"c1@customers.example": 4}  # more throttles than max_attempts
    async with prepared_store(settings) as store:
        job = await create_job(store, [customer(0), customer(1)])
        async with RunningServer(settings):
            done = await wait_for_job(store, job.id, timeout=90)
        assert (done.status, done.sent_count) == (JobStatus.COMPLETED, 2)
    assert proxy.sends["c1@customers.example"] == 5
