"""Settings into channels: the one place that says which channels exist and how each is
built (the core never branches on a channel's name).

``channel_rules`` is what ``jobs create`` and the import need (nothing opened);
``open_channels`` gives a consuming process its channels: email opened at once, every
other one opened by the first email of one of its jobs, so that a server sending only
email never imports nor builds their clients (SNS and S3 service models, asyncssh). A
channel is registered by one entry in ``_RULES`` and one in ``_OPENERS`` (see
``channels``).

An opening that fails is the error of the emails waiting for it (the channel stays
closed; the next email opens it again): ``RetryableError`` when the cause may pass (the
network, a credentials endpoint), ``PermanentError`` otherwise (a bad setting).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

from delivery_server.adapters.sender_outbox import EventSink
from delivery_server.app.adapters import open_attachments, open_sender
from delivery_server.channel_email import EMAIL_RULES, email_channel
from delivery_server.channels import DEFAULT_CHANNEL, Channel, ChannelRules, Channels
from delivery_server.drop_targets import s3_rules, sftp_rules
from delivery_server.errors import (
    DeliveryError,
    PermanentError,
    RetryableError,
    TargetRefusedError,
)
from delivery_server.renderer import Renderer
from delivery_server.sendgate import SendGate
from delivery_server.settings import Settings
from delivery_server.suppression import UnsubscribeLinks


def _webhook_rules(settings: Settings) -> ChannelRules:
    from delivery_server.adapters.channels.webhook import webhook_rules

    return webhook_rules(settings)


def _sms_rules(settings: Settings) -> ChannelRules:
    from delivery_server.adapters.channels.sms import SMS_RULES

    return SMS_RULES


# Each channel's rules from the settings (what its --target may be).
_RULES: dict[str, Callable[[Settings], ChannelRules]] = {
    "email": lambda settings: EMAIL_RULES,
    "webhook": _webhook_rules,
    "sms": _sms_rules,
    "s3": s3_rules,
    "sftp": sftp_rules,
}


def channel_rules(settings: Settings, name: str) -> ChannelRules:
    """The rules of one channel; ``TargetRefusedError`` for one this server lacks."""
    build = _RULES.get(name)
    if build is None:
        raise TargetRefusedError(
            f"--channel {name}: not available on this server (available: {', '.join(_RULES)})"
        )
    return build(settings)


class ChannelContext:
    """What channel openers share: the settings, the email sender's events sink, the
    renderer, and the gate the fleet paces the email channel with."""

    def __init__(
        self,
        settings: Settings,
        events: EventSink | None,
        renderer: Renderer,
        email_gate: SendGate,
        unsubscribe: UnsubscribeLinks | None,
    ) -> None:
        self.settings = settings
        self.events = events
        self.renderer = renderer
        self.email_gate = email_gate
        self.unsubscribe = unsubscribe


Opener = Callable[[ChannelContext], contextlib.AbstractAsyncContextManager[Channel[Any]]]


@contextlib.asynccontextmanager
async def _open_email(ctx: ChannelContext) -> AsyncIterator[Channel[Any]]:
    async with (
        open_sender(ctx.settings, events=ctx.events) as sender,
        open_attachments(ctx.settings) as attachments,
    ):
        yield email_channel(sender, ctx.renderer, attachments, ctx.unsubscribe, ctx.email_gate)


@contextlib.asynccontextmanager
async def _open_webhook(ctx: ChannelContext) -> AsyncIterator[Channel[Any]]:
    from delivery_server.adapters.channels.webhook import open_webhook_channel

    async with open_webhook_channel(ctx.settings, ctx.renderer) as channel:
        yield channel


@contextlib.asynccontextmanager
async def _open_sms(ctx: ChannelContext) -> AsyncIterator[Channel[Any]]:
    from delivery_server.adapters.channels.sms import open_sms_channel

    async with open_sms_channel(ctx.settings, ctx.renderer) as channel:
        yield channel


@contextlib.asynccontextmanager
async def _open_drop(ctx: ChannelContext, name: str) -> AsyncIterator[Channel[Any]]:
    from delivery_server.adapters.channels.drops import open_s3_channel, open_sftp_channel

    opener = open_s3_channel if name == "s3" else open_sftp_channel
    async with (
        open_attachments(ctx.settings) as attachments,
        opener(ctx.settings, ctx.renderer, attachments) as channel,
    ):
        yield channel


_OPENERS: dict[str, Opener] = {
    "email": _open_email,
    "webhook": _open_webhook,
    "sms": _open_sms,
    "s3": lambda ctx: _open_drop(ctx, "s3"),
    "sftp": lambda ctx: _open_drop(ctx, "sftp"),
}


@contextlib.asynccontextmanager
async def open_channels(ctx: ChannelContext) -> AsyncIterator[Channels]:
    """Every registered channel: email open, the others opened when first needed; every
    one opened is closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        email = await stack.enter_async_context(_OPENERS[DEFAULT_CHANNEL](ctx))

        async def open_later(name: str) -> Channel[Any]:
            try:
                return await stack.enter_async_context(_OPENERS[name](ctx))
            except Exception as exc:
                raise opening_error(name, exc) from exc

        # Email's own opener is left out by Channels: it is open already.
        channels = Channels([email], {n: functools.partial(open_later, n) for n in _OPENERS})
        try:
            yield channels
        finally:
            # Before the stack closes what was opened: nothing may join it afterwards.
            await channels.aclose()


def opening_error(name: str, exc: Exception) -> DeliveryError:
    """What the emails waiting for a channel's opening fail with, by the cause's class."""
    detail = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
    reason = f"channel {name!r} could not be opened: {detail}"
    if isinstance(exc, (RetryableError, OSError, *_transient_vendor_errors())):
        return RetryableError(reason)
    return PermanentError(reason)


def _transient_vendor_errors() -> tuple[type[Exception], ...]:
    """A connection, timeout or credentials endpoint that failed while an opener made its
    client; imported here, when an opening failed, so that email alone never loads them."""
    from aiohttp import ClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import (
        CredentialRetrievalError,
        HTTPClientError,
        MetadataRetrievalError,
    )

    return (
        ClientError,
        BotoConnectionError,
        HTTPClientError,
        CredentialRetrievalError,
        MetadataRetrievalError,
    )
