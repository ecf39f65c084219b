"""One ``ChannelCase`` per channel, for the pipeline's contract suite
(``test_pipeline_channels.py``): how the channel is built with a sender that does what
the test says — deliver, fail retryably, fail permanently, or hang (no answer: past its
timeout an uncertain send, cut by shutdown an interrupted one).

To add a channel (sms, s3, sftp): write a case whose ``open`` yields your channel over a
faked or local provider steered by ``Behaviour``, and append it to ``CHANNEL_CASES``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from delivery_server.adapters.channels.webhook import open_webhook_channel, signature
from delivery_server.channel_email import email_channel
from delivery_server.channels import Channel
from delivery_server.errors import PermanentError, RetryableError
from delivery_server.mime import CheckedEmail
from delivery_server.models import Attachment, AttachmentRef
from delivery_server.renderer import Renderer
from delivery_server.sendgate import SendGate
from delivery_server.settings import load_settings

OK, RETRY, PERMANENT, HANG = "ok", "retry", "permanent", "hang"
WEBHOOK_SECRET = "k" * 40


@dataclass
class Behaviour:
    """What the channel's provider does with the next sends, and what it received."""

    mode: str = OK
    delivered: list[Any] = field(default_factory=list)
    # Set when a send reached the provider and hangs there (the test may then cut it).
    hanging: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class ChannelCase:
    name: str
    recipient: Callable[[int], str]
    target: str | None
    # A value the import refuses, inserted as an upstream system might: fails alone.
    bad_recipient: str
    # Yields the channel; ``send_timeout``: how long a hung send waits for its answer.
    open: Callable[[Behaviour, float], contextlib.AbstractAsyncContextManager[Channel[Any]]]
    # Delivering twice is harmless (S3 and SFTP drops): an unanswered send is retried.
    idempotent: bool = False


class _ScriptedSender:
    """An email sender doing what ``Behaviour`` says (SES and SMTP have their own
    suites; here only the pipeline's side of each outcome matters)."""

    def __init__(self, behaviour: Behaviour, timeout: float) -> None:
        self._behaviour, self._timeout = behaviour, timeout

    async def max_send_rate(self) -> float | None:
        return None

    async def send(self, email: CheckedEmail) -> str:
        mode = self._behaviour.mode
        if mode == RETRY:
            raise RetryableError("scripted 503")
        if mode == PERMANENT:
            raise PermanentError("scripted rejection")
        if mode == HANG:
            from delivery_server.errors import UncertainSendError

            self._behaviour.hanging.set()
            await asyncio.sleep(self._timeout)
            raise UncertainSendError("scripted read timeout")
        self._behaviour.delivered.append(email.email_id)
        return f"scripted-{email.email_id}"


class _NoAttachments:
    async def load(self, ref: AttachmentRef) -> Attachment:
        raise PermanentError("no attachments in this suite")


@contextlib.asynccontextmanager
async def _open_email(behaviour: Behaviour, timeout: float) -> AsyncIterator[Channel[Any]]:
    yield email_channel(
        _ScriptedSender(behaviour, timeout), Renderer(), _NoAttachments(), None, SendGate()
    )


@contextlib.asynccontextmanager
async def receiver(behaviour: Behaviour, port: int = 0) -> AsyncIterator[int]:
    """A webhook receiver on 127.0.0.1 that checks each signature; yields its port."""

    async def hook(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        job_id = int(request.headers["X-Delivery-Job-Id"])
        from delivery_server.adapters.channels.webhook import job_secret

        expected = signature(job_secret(WEBHOOK_SECRET.encode(), job_id), body)
        if request.headers.get("X-Delivery-Signature") != expected:
            return web.Response(status=401)
        mode = behaviour.mode
        if mode == RETRY:
            return web.Response(status=503)
        if mode == PERMANENT:
            return web.Response(status=422)
        if mode == HANG:
            behaviour.hanging.set()
            await asyncio.Event().wait()
        behaviour.delivered.append(int(request.headers["Idempotency-Key"]))
        return web.Response(status=202, headers={"X-Request-Id": f"r-{len(behaviour.delivered)}"})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield bound
    finally:
        await runner.cleanup()


def webhook_settings(**overrides: Any) -> Any:
    values: dict[str, Any] = {
        "sender": "ses",
        "webhook_hosts": "127.0.0.1",
        "webhook_allow_private": True,
        "webhook_secret": WEBHOOK_SECRET,
        "outbox_dir": Path("unused-outbox"),
    }
    return load_settings(None, **(values | overrides))


@contextlib.asynccontextmanager
async def _open_webhook(behaviour: Behaviour, timeout: float) -> AsyncIterator[Channel[Any]]:
    async with receiver(behaviour, WEBHOOK_PORT) as _port:
        settings = webhook_settings(send_timeout=timeout)
        async with open_webhook_channel(settings, Renderer()) as channel:
            yield channel


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# The job's target names the port, so the receiver of this suite listens on a fixed one.
WEBHOOK_PORT = _free_port()

CHANNEL_CASES = [
    ChannelCase("email", lambda n: f"c{n}@customers.example", None, "not-an-address", _open_email),
    ChannelCase(
        "webhook",
        lambda n: f"customer-{n}",
        f"http://127.0.0.1:{WEBHOOK_PORT}/hook",
        "bell\x07ref",
        _open_webhook,
    ),
]
