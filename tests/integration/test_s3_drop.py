"""The s3 drop sender against moto's S3: encrypted, checksummed, idempotent puts, and
each failure mapped onto the error tree."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest

from delivery_server.adapters.aws.s3_drop import S3DropSender, open_s3_drop_sender
from delivery_server.drop_targets import S3Target, parse_s3_target
from delivery_server.drops import DropForm, drop_files
from delivery_server.errors import PermanentError, ProviderUnreachableError, RetryableError
from delivery_server.models import Attachment, AttachmentRef, EmailStatus, JobStatus, NewEmail
from tests.conftest import free_port
from tests.integration.harness import (
    FROM_ADDRESS,
    STATEMENT,
    RunningServer,
    aws_settings,
    create_sqs_queue,
    customer,
    prepared_store,
    wait_for_job,
)

pytestmark = [pytest.mark.moto, pytest.mark.timeout(90)]

BUCKET = "partner-drops"
PDF = b"%PDF-1.4\n" + bytes(range(256)) + b"\n%%EOF\n"
TARGET = parse_s3_target(f"s3://{BUCKET}/statements/2024", frozenset({BUCKET}))


def drop(key: str = "customers/jane roe", email_id: int = 7) -> DropForm[S3Target]:
    files = drop_files(
        key,
        [Attachment("statement.pdf", "application/pdf", PDF)],
        text_body="Dear Jane,\nyour statement.",
        html_body=None,
    )
    return DropForm("s3", job_id=3, email_id=email_id, target=TARGET, files=files)


@pytest.fixture
def s3(moto: str) -> Any:
    """A boto3 client on the freshly reset moto, with the drop bucket created."""
    client = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
async def sender(moto: str, s3: Any) -> AsyncIterator[S3DropSender]:
    async with open_s3_drop_sender(endpoint_url=moto, region_name="us-east-1") as opened:
        yield opened


def keys(s3: Any) -> list[str]:
    listed = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return sorted(item["Key"] for item in listed)


async def test_a_drop_puts_each_file_under_prefix_and_key_encrypted(
    sender: S3DropSender, s3: Any
) -> None:
    provider_id = await sender.send(drop())

    prefix = "statements/2024/customers/jane roe/"
    assert keys(s3) == [prefix + "body.txt", prefix + "statement.pdf"]
    pdf = s3.get_object(Bucket=BUCKET, Key=prefix + "statement.pdf")
    assert pdf["Body"].read() == PDF
    assert pdf["ContentType"] == "application/pdf"
    assert pdf["ServerSideEncryption"] == "AES256"
    # The ETag of an SSE-S3 single put is the MD5 of what S3 stored: the bytes we had.
    assert pdf["ETag"].strip('"') == hashlib.md5(PDF, usedforsecurity=False).hexdigest()
    body = s3.get_object(Bucket=BUCKET, Key=prefix + "body.txt")
    assert body["Body"].read() == b"Dear Jane,\nyour statement."
    assert body["ContentType"].startswith("text/plain")
    assert provider_id.startswith("s3-")
    assert "jane" not in provider_id


async def test_every_put_carries_the_content_md5(moto: str, s3: Any) -> None:
    seen: list[str | None] = []
    async with open_s3_drop_sender(endpoint_url=moto, region_name="us-east-1") as sender:
        client = sender._client  # the test listens on the client's own events

        def record(request: Any, **_: Any) -> None:
            seen.append(request.headers.get("Content-MD5"))

        client.meta.events.register("before-send.s3.PutObject", record)
        await sender.send(drop())

    assert len(seen) == 2
    sent = (PDF, b"Dear Jane,\nyour statement.")
    expected = {hashlib.md5(data, usedforsecurity=False).digest() for data in sent}
    assert {base64.b64decode(value or "") for value in seen} == expected


async def test_a_kms_drop_names_the_key(moto: str, s3: Any) -> None:
    kms = boto3.client("kms", endpoint_url=moto, region_name="us-east-1")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    async with open_s3_drop_sender(
        sse="aws:kms", kms_key_id=key_id, endpoint_url=moto, region_name="us-east-1"
    ) as sender:
        await sender.send(drop())

    head = s3.head_object(Bucket=BUCKET, Key="statements/2024/customers/jane roe/statement.pdf")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert key_id in head["SSEKMSKeyId"]


async def test_a_retried_drop_writes_the_same_objects_again(sender: S3DropSender, s3: Any) -> None:
    first = await sender.send(drop())
    before = {k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys(s3)}

    second = await sender.send(drop())

    after = {k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys(s3)}
    assert second == first
    assert after == before


async def test_a_missing_bucket_is_permanent_and_quotes_no_key(moto: str) -> None:
    async with open_s3_drop_sender(endpoint_url=moto, region_name="us-east-1") as sender:
        with pytest.raises(PermanentError, match="NoSuchBucket") as caught:
            await sender.send(drop())
    assert "jane" not in str(caught.value)


async def test_an_unreachable_endpoint_pauses_the_channel(aws_env: None) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    async with open_s3_drop_sender(endpoint_url=endpoint, region_name="us-east-1") as sender:
        with pytest.raises(ProviderUnreachableError):
            await sender.send(drop())


async def test_a_put_that_times_out_is_retried_not_unknown(aws_env: None) -> None:
    requests = 0
    released = asyncio.Event()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        requests += 1
        await reader.read(65536)
        await released.wait()  # no answer until the test is over: a read timeout
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with open_s3_drop_sender(
            endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1", timeout=0.5
        ) as sender:
            with pytest.raises(RetryableError) as caught:
                await sender.send(drop())
    finally:
        released.set()
        server.close()
        await server.wait_closed()
    assert type(caught.value) is RetryableError  # not UncertainSendError: a re-put is harmless
    assert requests == 1  # one attempt per call: the SDK retried nothing


async def test_a_server_drops_a_jobs_recipients_and_a_bad_key_fails_alone(
    moto: str, s3: Any, mariadb_url: str, tmp_path: Path
) -> None:
    (tmp_path / "statements").mkdir()
    (tmp_path / "statements" / "42.pdf").write_bytes(PDF)
    settings = aws_settings(
        mariadb_url, moto, create_sqs_queue(moto), tmp_path, drop_s3_buckets=BUCKET
    )
    statement = AttachmentRef("file:statements/42.pdf", "statement.pdf", "application/pdf")
    async with prepared_store(settings) as store:
        await store.add_template(STATEMENT)
        job = await store.create_job(
            "drops", STATEMENT.name, FROM_ADDRESS, channel="s3", target=f"s3://{BUCKET}/2026/"
        )
        good = [customer(n) for n in (1, 2)]
        await store.add_emails(
            job.id,
            [
                NewEmail(f"customers/{n}", e.variables, attachments=(statement,))
                for n, e in zip((1, 2), good, strict=True)
            ]
            # Inserted past the import's checks, as an upstream system might.
            + [NewEmail("../../escape", good[0].variables)],
        )
        await store.set_job_status(job.id, JobStatus.PROCESSING)
        async with RunningServer(settings):
            finished = await wait_for_job(store, job.id)
        summary = await store.job_summary(job.id)

    assert finished.status is JobStatus.FAILED
    assert summary.counts[EmailStatus.SENT] == 2
    assert summary.counts[EmailStatus.FAILED] == 1
    (group,) = summary.error_groups
    assert group.error_class.startswith("PermanentError")
    # The statement template has text and HTML: both bodies go beside the attachment.
    assert keys(s3) == [
        f"2026/customers/{n}/{name}"
        for n in (1, 2)
        for name in ("body.html", "body.txt", "statement.pdf")
    ]
    assert s3.get_object(Bucket=BUCKET, Key="2026/customers/2/statement.pdf")["Body"].read() == PDF
