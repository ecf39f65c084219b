"""One ``ChannelCase`` per channel, for the pipeline's contract suite
(``test_pipeline_channels.py``): how the channel is built with a sender that does what
the test says — deliver, fail retryably, fail permanently, or hang (no answer: past its
timeout an uncertain send, cut by shutdown an interrupted one).

To add a channel: write a case whose ``open`` yields your channel over a faked or local
provider steered by ``Behaviour``, and append it to ``CHANNEL_CASES``. A case whose
provider is a server the test session runs names its fixture (``ChannelCase.provider``):
the suite gives its endpoint in ``Behaviour.provider``.

sms
    The real SNS sender, through a stand-in on loopback in front of moto's SNS: the
    opt-out check and a delivering ``Publish`` go to moto (which records each SMS); a
    ``Publish`` told to fail gets SNS's ``InternalError`` (500) or ``InvalidParameter``
    (400), one told to hang gets no answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from delivery_server.adapters.channels.sms import open_sms_channel
from delivery_server.adapters.channels.webhook import open_webhook_channel, signature
from delivery_server.channel_email import email_channel
from delivery_server.channels import Channel
from delivery_server.errors import PermanentError, RetryableError
from delivery_server.mime import CheckedEmail
from delivery_server.models import Attachment, AttachmentRef
from delivery_server.renderer import Renderer
from delivery_server.sendgate import SendGate
from delivery_server.settings import load_settings
from delivery_server.sms import OutgoingSms
from tests.support.http_stub import serving

OK, RETRY, PERMANENT, HANG = "ok", "retry", "permanent", "hang"
WEBHOOK_SECRET = "k" * 40


@dataclass
class Behaviour:
    """What the channel's provider does with the next sends, and what it received."""

    mode: str = OK
    delivered: list[Any] = field(default_factory=list)
    # Set when a send reached the provider and hangs there (the test may then cut it).
    hanging: asyncio.Event = field(default_factory=asyncio.Event)
    # The endpoint of the case's ``provider`` fixture (moto), when it names one.
    provider: str | None = None


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
    # The fixture of a server the provider runs on (``Behaviour.provider``), if any.
    provider: str | None = None
    # What each send is recorded as billed for (``delivery_email.segments``).
    segments: int | None = None


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
    async with serving(app, port) as bound:
        yield bound


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

_SNS_ERRORS = {RETRY: (500, "InternalError"), PERMANENT: (400, "InvalidParameter")}


def _sns_error(status: int, code: str) -> web.Response:
    body = (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
        f"<Message>stand-in</Message></Error><RequestId>r</RequestId></ErrorResponse>"
    )
    return web.Response(status=status, body=body.encode(), content_type="text/xml")


@contextlib.asynccontextmanager
async def _sns_stand_in(behaviour: Behaviour, moto: str) -> AsyncIterator[str]:
    """SNS on loopback: moto's, except for a ``Publish`` that ``behaviour`` says fails or
    hangs; yields its endpoint."""
    released = asyncio.Event()
    session = aiohttp.ClientSession()

    async def call(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        action = (await request.post()).get("Action")
        if action == "Publish" and behaviour.mode in _SNS_ERRORS:
            return _sns_error(*_SNS_ERRORS[behaviour.mode])
        if action == "Publish" and behaviour.mode == HANG:
            behaviour.hanging.set()
            await released.wait()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with session.post(moto, data=body, headers=headers) as answer:
            return web.Response(
                status=answer.status, body=await answer.read(), content_type="text/xml"
            )

    async with session:
        # moto loads its SNS backend on the first call: not inside a send's short timeout.
        warm_up = {"Action": "CheckIfPhoneNumberIsOptedOut", "phoneNumber": "+14155550100"}
        async with session.post(moto, data=warm_up) as answer:
            assert answer.status == 200, await answer.text()
        app = web.Application()
        app.router.add_post("/", call)
        async with serving(app) as port:
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                released.set()


class _RecordingSms:
    """The SNS sender, noting each SMS that SNS (moto) took."""

    def __init__(self, sender: Any, behaviour: Behaviour) -> None:
        self._sender, self._behaviour = sender, behaviour

    async def max_send_rate(self) -> float | None:
        rate: float | None = await self._sender.max_send_rate()
        return rate

    async def send(self, outgoing: OutgoingSms) -> str:
        message_id: str = await self._sender.send(outgoing)
        self._behaviour.delivered.append(outgoing.email_id)
        return message_id


@contextlib.asynccontextmanager
async def _open_sms(behaviour: Behaviour, timeout: float) -> AsyncIterator[Channel[Any]]:
    assert behaviour.provider is not None, "the sms case runs on moto (provider='moto')"
    async with _sns_stand_in(behaviour, behaviour.provider) as endpoint:
        settings = load_settings(
            None, sender="ses", aws_endpoint_url=endpoint, send_timeout=timeout
        )
        async with open_sms_channel(settings, Renderer()) as channel:
            yield Channel(
                channel.rules,
                channel.renderer,
                _RecordingSms(channel.sender, behaviour),
                channel.gate,
                channel.segments_of,
            )


CHANNEL_CASES = [
    ChannelCase("email", lambda n: f"c{n}@customers.example", None, "not-an-address", _open_email),
    ChannelCase(
        "webhook",
        lambda n: f"customer-{n}",
        f"http://127.0.0.1:{WEBHOOK_PORT}/hook",
        "bell\x07ref",
        _open_webhook,
    ),
    # Fiction numbers of the North American plan (555-0100..0198; moto: 99 opted out).
    ChannelCase(
        "sms",
        lambda n: f"+1415555{100 + n:04d}",
        None,
        "+1415555",
        _open_sms,
        provider="moto",
        segments=1,
    ),
]
