"""Attachment loaders: file paths kept inside their directory, S3 kept to its buckets."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import pytest

from delivery_server.adapters.attachments import AttachmentRouter, FileAttachmentLoader
from delivery_server.adapters.aws.s3 import open_s3_loader
from delivery_server.errors import PermanentError, RetryableError
from delivery_server.models import Attachment, AttachmentRef
from tests.support.smtp_sink import free_port

pytestmark = pytest.mark.timeout(60)

PDF = b"%PDF-1.4\n" + bytes(range(256)) + b"\n%%EOF\n"


def ref(uri: str) -> AttachmentRef:
    return AttachmentRef(uri=uri, filename="statement.pdf", content_type="application/pdf")


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """``tmp/attachments`` holding statements, with a secret file next to it (outside)."""
    root = tmp_path / "attachments"
    (root / "2024").mkdir(parents=True)
    (root / "2024" / "john.doe.pdf").write_bytes(PDF)
    (tmp_path / "secret.txt").write_bytes(b"not for customers")
    return root


@pytest.fixture
def loader(base: Path) -> FileAttachmentLoader:
    return FileAttachmentLoader(base)


# --- file: ----------------------------------------------------------------------------


async def test_relative_file_is_loaded(loader: FileAttachmentLoader) -> None:
    got = await loader.load(ref("file:2024/john.doe.pdf"))

    assert got == Attachment("statement.pdf", "application/pdf", PDF)


@pytest.mark.parametrize(
    "uri",
    [
        "file:../secret.txt",
        "file:2024/../../secret.txt",
        "file:2024/../john.doe.pdf",  # stays inside, but ".." is refused outright
        "file:./../secret.txt",
    ],
)
async def test_parent_escapes_are_refused(loader: FileAttachmentLoader, uri: str) -> None:
    with pytest.raises(PermanentError, match="escapes the attachments directory") as caught:
        await loader.load(ref(uri))
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    "uri", ["file:/etc/passwd", "file:///etc/passwd", "file://host/share/a.pdf"]
)
async def test_absolute_paths_are_refused(loader: FileAttachmentLoader, uri: str) -> None:
    with pytest.raises(PermanentError, match="must be relative"):
        await loader.load(ref(uri))


@pytest.mark.parametrize("uri", ["file:", "file:a\x00b.pdf", "file:2024\\john.doe.pdf"])
async def test_malformed_paths_are_refused(loader: FileAttachmentLoader, uri: str) -> None:
    with pytest.raises(PermanentError, match="invalid file attachment path"):
        await loader.load(ref(uri))


async def test_symlink_leading_outside_is_refused(
    loader: FileAttachmentLoader, base: Path, tmp_path: Path
) -> None:
    (base / "innocent.pdf").symlink_to(tmp_path / "secret.txt")
    (base / "elsewhere").symlink_to(tmp_path, target_is_directory=True)

    for uri in ("file:innocent.pdf", "file:elsewhere/secret.txt"):
        with pytest.raises(PermanentError, match="escapes the attachments directory"):
            await loader.load(ref(uri))


async def test_symlink_staying_inside_is_followed(loader: FileAttachmentLoader, base: Path) -> None:
    (base / "latest.pdf").symlink_to(base / "2024" / "john.doe.pdf")

    assert (await loader.load(ref("file:latest.pdf"))).data == PDF


async def test_base_dir_reached_through_a_symlink_works(base: Path, tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(base, target_is_directory=True)

    got = await FileAttachmentLoader(tmp_path / "link").load(ref("file:2024/john.doe.pdf"))
    assert got.data == PDF


async def test_no_base_dir_refuses_every_file(base: Path) -> None:
    with pytest.raises(PermanentError, match="file attachments are disabled"):
        await FileAttachmentLoader(None).load(ref("file:2024/john.doe.pdf"))


async def test_missing_file_is_permanent(loader: FileAttachmentLoader) -> None:
    with pytest.raises(PermanentError, match="not found") as caught:
        await loader.load(ref("file:2024/jane.roe.pdf"))
    assert "jane" not in str(caught.value)


async def test_missing_base_dir_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="not found"):
        await FileAttachmentLoader(tmp_path / "nowhere").load(ref("file:a.pdf"))


async def test_directories_and_fifos_are_refused(loader: FileAttachmentLoader, base: Path) -> None:
    os.mkfifo(base / "pipe.pdf")  # opening it for reading must not block the worker

    for uri in ("file:2024", "file:pipe.pdf"):
        with pytest.raises(PermanentError, match="not a regular file"):
            await asyncio.wait_for(loader.load(ref(uri)), timeout=10)


async def test_oversized_file_is_refused(base: Path) -> None:
    small = FileAttachmentLoader(base, max_bytes=len(PDF) - 1)
    with pytest.raises(PermanentError, match="too large"):
        await small.load(ref("file:2024/john.doe.pdf"))
    exact = FileAttachmentLoader(base, max_bytes=len(PDF))
    assert (await exact.load(ref("file:2024/john.doe.pdf"))).data == PDF


# --- s3:// (moto) ---------------------------------------------------------------------


@pytest.fixture
def buckets(moto: str) -> str:
    """Two buckets with the same key; only ``statements`` is allowed in the tests."""
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    for bucket in ("statements", "other"):
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="2024/john doe.pdf", Body=PDF)
    return moto


async def test_s3_object_in_an_allowed_bucket_is_loaded(buckets: str) -> None:
    async with open_s3_loader(frozenset({"statements"}), endpoint_url=buckets) as s3:
        got = await s3.load(ref("s3://statements/2024/john doe.pdf"))

    assert got == Attachment("statement.pdf", "application/pdf", PDF)


async def test_s3_bucket_not_allowed_is_refused(buckets: str) -> None:
    async with open_s3_loader(frozenset({"statements"}), endpoint_url=buckets) as s3:
        with pytest.raises(PermanentError, match="bucket is not allowed"):
            await s3.load(ref("s3://other/2024/john doe.pdf"))


async def test_s3_missing_key_is_permanent(buckets: str) -> None:
    async with open_s3_loader(frozenset({"statements"}), endpoint_url=buckets) as s3:
        with pytest.raises(PermanentError, match="not found") as caught:
            await s3.load(ref("s3://statements/2024/jane roe.pdf"))
    assert "jane" not in str(caught.value)


async def test_s3_oversized_object_is_refused(buckets: str) -> None:
    async with open_s3_loader(
        frozenset({"statements"}), endpoint_url=buckets, max_bytes=len(PDF) - 1
    ) as s3:
        with pytest.raises(PermanentError, match="too large"):
            await s3.load(ref("s3://statements/2024/john doe.pdf"))


@pytest.mark.parametrize("uri", ["s3://statements", "s3://statements/", "s3:///key.pdf"])
async def test_s3_uri_needs_bucket_and_key(buckets: str, uri: str) -> None:
    async with open_s3_loader(frozenset({"statements"}), endpoint_url=buckets) as s3:
        with pytest.raises(PermanentError, match="needs a bucket and a key"):
            await s3.load(ref(uri))


async def test_s3_unreachable_is_retryable(aws_env: None) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    async with open_s3_loader(frozenset({"statements"}), endpoint_url=endpoint) as s3:
        with pytest.raises(RetryableError):
            await s3.load(ref("s3://statements/2024/john doe.pdf"))


# --- routing --------------------------------------------------------------------------


class RecordingLoader:
    def __init__(self, name: str) -> None:
        self.name = name
        self.uris: list[str] = []

    async def load(self, ref: AttachmentRef) -> Attachment:
        self.uris.append(ref.uri)
        return Attachment(ref.filename, ref.content_type, self.name.encode())


async def test_router_dispatches_by_scheme() -> None:
    files, s3 = RecordingLoader("file"), RecordingLoader("s3")
    router = AttachmentRouter(files, s3)

    assert (await router.load(ref("file:a.pdf"))).data == b"file"
    assert (await router.load(ref("s3://statements/a.pdf"))).data == b"s3"
    assert (files.uris, s3.uris) == (["file:a.pdf"], ["s3://statements/a.pdf"])


@pytest.mark.parametrize(
    "uri", ["https://example.org/a.pdf", "ftp://x/a.pdf", "S3://statements/a.pdf", "a.pdf"]
)
async def test_router_refuses_unknown_schemes(uri: str) -> None:
    router = AttachmentRouter(RecordingLoader("file"), RecordingLoader("s3"))
    with pytest.raises(PermanentError, match="unsupported attachment uri scheme"):
        await router.load(ref(uri))


async def test_router_without_s3_refuses_s3() -> None:
    router = AttachmentRouter(RecordingLoader("file"), None)
    with pytest.raises(PermanentError, match="s3 attachments are not configured"):
        await router.load(ref("s3://statements/a.pdf"))
