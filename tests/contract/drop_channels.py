"""The ``s3`` and ``sftp`` cases of the pipeline's contract suite: each channel as the
server opens it (``adapters.channels.drops``), its provider steered by ``Behaviour``.

s3
    The real S3 drop sender against a small S3 stand-in on loopback (PutObject only: it
    checks each body against its Content-MD5, answers ``InternalError`` 500 to a retry,
    ``AccessDenied`` 403 to a permanent failure, or nothing to a hang). moto's S3 is in
    ``tests/integration/test_s3_drop.py``; moto cannot be told to fail one call.
sftp
    The real SFTP drop sender against the asyncssh server of ``tests.support.sftp_server``,
    which fails or hangs each open as ``Behaviour`` says.

``delivered`` records the email ids whose drop the channel's sender finished. Both drops
are idempotent (``ChannelCase.idempotent``): an unanswered upload is retried, not
``unknown``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
from aiohttp import web

from delivery_server.adapters.channels.drops import open_s3_channel, open_sftp_channel
from delivery_server.channels import Channel
from delivery_server.drops import DropForm
from delivery_server.models import Attachment, AttachmentRef
from delivery_server.renderer import Renderer
from delivery_server.settings import load_settings
from tests.conftest import free_port
from tests.contract.channels import HANG, PERMANENT, RETRY, Behaviour, ChannelCase
from tests.support.http_stub import serving
from tests.support.sftp_server import PASSWORD, USER, serving_sftp

BUCKET = "drops"
_S3_ERRORS = {RETRY: (500, "InternalError"), PERMANENT: (403, "AccessDenied")}


class _NoAttachments:
    async def load(self, ref: AttachmentRef) -> Attachment:
        raise AssertionError("the contract suite's emails have no attachments")


class _Recording:
    """The channel's own sender, noting each drop it finished."""

    def __init__(self, sender: Any, behaviour: Behaviour) -> None:
        self._sender, self._behaviour = sender, behaviour

    async def max_send_rate(self) -> float | None:
        rate: float | None = await self._sender.max_send_rate()
        return rate

    async def send(self, outgoing: DropForm[Any]) -> str:
        provider_id: str = await self._sender.send(outgoing)
        self._behaviour.delivered.append(outgoing.email_id)
        return provider_id


def _recorded(channel: Channel[Any], behaviour: Behaviour) -> Channel[Any]:
    return Channel(channel.rules, channel.renderer, _Recording(channel.sender, behaviour))


@contextlib.contextmanager
def _fake_aws_credentials() -> Iterator[None]:
    """Credentials for the stand-in only (no test may ever reach a real account)."""
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.asynccontextmanager
async def _s3_stand_in(behaviour: Behaviour) -> AsyncIterator[str]:
    """PutObject on loopback, doing what ``behaviour`` says; yields its endpoint."""
    released = asyncio.Event()

    async def put(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        if request.headers.get("Content-MD5") != md5:
            return _s3_error(400, "BadDigest")
        if request.headers.get("x-amz-server-side-encryption") != "AES256":
            return _s3_error(400, "InvalidRequest")
        if behaviour.mode in _S3_ERRORS:
            return _s3_error(*_S3_ERRORS[behaviour.mode])
        if behaviour.mode == HANG:
            behaviour.hanging.set()
            await released.wait()
        etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
        return web.Response(status=200, headers={"ETag": f'"{etag}"'})

    app = web.Application()
    app.router.add_put("/{bucket}/{key:.+}", put)
    async with serving(app) as port:
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            released.set()


def _s3_error(status: int, code: str) -> web.Response:
    body = f"<Error><Code>{code}</Code><Message>stand-in</Message></Error>"
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


@contextlib.asynccontextmanager
async def _open_s3(behaviour: Behaviour, timeout: float) -> AsyncIterator[Channel[Any]]:
    with _fake_aws_credentials():
        async with _s3_stand_in(behaviour) as endpoint:
            settings = load_settings(
                None,
                sender="ses",
                drop_s3_buckets=BUCKET,
                aws_endpoint_url=endpoint,
                send_timeout=timeout / 2,  # a whole put gets twice the timeout
            )
            async with open_s3_channel(settings, Renderer(), _NoAttachments()) as channel:
                yield _recorded(channel, behaviour)


@contextlib.asynccontextmanager
async def _open_sftp(behaviour: Behaviour, timeout: float) -> AsyncIterator[Channel[Any]]:
    released = asyncio.Event()

    async def before_open(path: str) -> None:
        if behaviour.mode == RETRY:
            raise asyncssh.SFTPFailure("scripted failure")
        if behaviour.mode == PERMANENT:
            raise asyncssh.SFTPPermissionDenied("scripted refusal")
        if behaviour.mode == HANG:
            behaviour.hanging.set()
            await released.wait()

    with tempfile.TemporaryDirectory() as scratch:
        async with serving_sftp(Path(scratch) / "served", SFTP_PORT) as server:
            server.state.before_open = before_open
            known_hosts = Path(scratch) / "known_hosts"
            known_hosts.write_text(server.known_hosts_line())
            settings = load_settings(
                None,
                sender="ses",
                drop_sftp_hosts=server.host,
                sftp_known_hosts=known_hosts,
                sftp_password=PASSWORD,
                send_timeout=timeout / 2,  # a whole file gets twice the timeout
            )
            try:
                async with open_sftp_channel(settings, Renderer(), _NoAttachments()) as channel:
                    yield _recorded(channel, behaviour)
            finally:
                released.set()


# The job's target names the port, so the server of this suite listens on a fixed one.
SFTP_PORT = free_port()

DROP_CASES = [
    ChannelCase(
        "s3",
        lambda n: f"customers/c{n}",
        f"s3://{BUCKET}/contract/",
        "customers/../../escape",
        _open_s3,
        idempotent=True,
    ),
    ChannelCase(
        "sftp",
        lambda n: f"customers/c{n}",
        f"sftp://{USER}@127.0.0.1:{SFTP_PORT}/drops",
        "../escape",
        _open_sftp,
        idempotent=True,
    ),
]
