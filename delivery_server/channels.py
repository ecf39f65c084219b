"""Channels (DESIGN §12): what a job delivers through — email, sms, s3, sftp or webhook.

Every channel goes through the same publisher, queue, claim, attempts, ``unknown`` window,
pause/cancel/restart and job states; the pipeline never asks which channel it holds. A
channel is three small parts, joined in the composition root (``app/channels.py``)::

    Channel
        rules       ChannelRules: the recipient field read at import (``email``, ``phone``,
                    ``key``, ``path``, ``ref``), the recipient check (at import AND at the
                    claim), the ``--target`` check of ``jobs create`` (names its setting)
        renderer    ChannelRenderer[Out]: claimed email + its job's pinned template → Out,
                    the outgoing form, fully checked; nothing has left the process yet
        sender      ChannelSender[Out]: one attempt to deliver Out; returns a provider id
        gate        the channel's own SendGate: a paused SES account or an SES rate never
                    holds an SMS, a drop or a webhook back, nor the other way round
        segments_of Out → the parts a send of it is billed as (an SMS's segments),
                    recorded with the send (``delivery_email.segments``); None (the
                    default) for channels billed per message

How to plug a channel in (sms, s3, sftp — the webhook is the worked example,
``adapters/channels/webhook.py``):

1. In your adapter module (``adapters/channels/<name>.py``) write
   ``rules(settings) -> ChannelRules``: ``name`` (one of ``CHANNEL_NAMES``),
   ``recipient_field``, ``check_recipient(value) -> normalised value`` (raise
   ``PermanentError`` with a reason that never quotes the value) and
   ``check_target(uri | None) -> normalised uri | None`` (raise ``errors.TargetRefusedError``,
   also importable from here,
   naming the setting: ``DELIVERY_DROP_S3_BUCKETS``, ``DELIVERY_DROP_SFTP_HOSTS``,
   ``DELIVERY_WEBHOOK_HOSTS``; these allow-lists are already in ``settings.py`` with
   ``Settings.drop_s3_bucket_set``, ``drop_sftp_host_set``, ``webhook_host_set``).
2. Write a renderer (``async render(claimed, template) -> Out``). It MUST check
   ``claimed.email.to_address`` again with your ``check_recipient`` (rows may be inserted
   by upstream systems, not only by ``jobs create``) and ``claimed.job.target`` against
   the settings; bad input is a ``PermanentError`` (one email fails, nothing else).
   Make ``Out`` also an ``OutboxForm`` (``outbox_files()``), so embedded mode writes it to
   the outbox instead of sending (``adapters/channel_outbox.py`` does the writing).
3. Write a sender (``async send(out) -> str`` and ``async max_send_rate()``), one attempt
   per call, SDK retries off. Map every vendor error onto ``errors``:
   ``PermanentError`` (fails at once), ``RetryableError`` (one attempt, backoff),
   ``ThrottledError`` (not an attempt; slows this channel's gate only),
   ``AccountPausedError`` (not an attempt; pauses this channel's gate only),
   ``ProviderUnreachableError`` (nothing left; pauses this channel's gate with a growing
   backoff), ``UncertainSendError`` (the request may have been received: the email
   becomes ``unknown``, never resent blindly — S3/SFTP drops are idempotent, so they may
   raise ``RetryableError`` where SMS and webhook must raise ``UncertainSendError``).
   Put the translation table in your module's docstring and in ``docs/reliability.md``.
4. Register it: one entry in ``app/channels.py`` (``_RULES`` and ``_OPENERS``), which picks
   your real sender or, with ``DELIVERY_SENDER=outbox``, the outbox. Every channel but
   email is opened by the first email of one of its jobs (``Channels.of_job``), so
   import your SDKs inside your opener, never at the top of a module email imports.
5. Add your channel to the contract suites: ``tests/contract/channels.py`` has one
   ``ChannelCase`` per channel (how its sender is faked to succeed, fail, fail
   permanently, hang); add yours to ``CHANNEL_CASES``.

Migrations: this issue's core is ``r0008`` (``delivery_job.channel``, ``.target``); SMS
took ``r0009`` (``delivery_template.sms_body``) and ``r0010`` (``delivery_email.segments``,
``delivery_job.max_segments``); the drops needed none. Chain a new one after the newest.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from delivery_server.errors import PermanentError, TargetRefusedError, ThrottledError
from delivery_server.models import ClaimedEmail, Template
from delivery_server.sendgate import SendGate

__all__ = [
    "CHANNEL_NAMES",
    "DEFAULT_CHANNEL",
    "Channel",
    "ChannelOpener",
    "ChannelRenderer",
    "ChannelRules",
    "ChannelSender",
    "Channels",
    "OutboxForm",
    "TargetRefusedError",
    "no_target",
    "uncounted",
]

DEFAULT_CHANNEL = "email"
CHANNEL_NAMES = ("email", "sms", "s3", "sftp", "webhook")

Out = TypeVar("Out")
Out_co = TypeVar("Out_co", covariant=True)
Out_contra = TypeVar("Out_contra", contravariant=True)

# Jobs whose channel this process has seen, so that a paused channel's messages are not
# claimed (which would burn a database round trip per message for nothing). Bounded: a
# job not remembered is simply claimed, and its channel's gate waits out the pause.
_REMEMBERED_JOBS = 4096


@dataclass(frozen=True, slots=True)
class ChannelRules:
    """What is known of a channel without opening anything: ``jobs create`` and the
    import use it, and the channel's renderer applies the same checks at the claim."""

    name: str
    # The CSV column / JSONL key holding the recipient value (stored in ``to_address``).
    recipient_field: str
    # The value, normalised; ``PermanentError`` with a reason that does not quote it.
    check_recipient: Callable[[str], str]
    # The job's target, normalised; ``TargetRefusedError`` naming the setting.
    check_target: Callable[[str | None], str | None]


class ChannelRenderer(Protocol[Out_co]):
    """Claimed email + its job's template → the channel's outgoing form, fully checked."""

    async def render(self, claimed: ClaimedEmail, template: Template) -> Out_co:
        """Build what the sender sends; ``PermanentError`` for bad input (the recipient
        value is checked again here), ``RetryableError`` for a transient fetch failure."""
        ...


class ChannelSender(Protocol[Out_contra]):
    """Hands one outgoing form to a provider, exactly one attempt per call."""

    async def send(self, outgoing: Out_contra) -> str:
        """Deliver and return the provider's id; raise an ``errors`` class on failure."""
        ...

    async def max_send_rate(self) -> float | None:
        """The provider account's sends per second, or None when it has no such limit."""
        ...


class OutboxForm(Protocol):
    """An outgoing form that embedded mode writes into the outbox instead of sending."""

    @property
    def outbox_stem(self) -> str:
        """The file name without suffix: ``<job_id>-<email_id>``."""
        ...

    def outbox_files(self) -> Sequence[tuple[str, bytes]]:
        """(suffix, bytes) per file, e.g. ``(".webhook.json", body)``, written as
        ``<outbox_stem><suffix>``; a suffix is a plain name part (no ``/``, no ``..``):
        a drop names its files e.g. ``".s3.statement.pdf"``."""
        ...


def uncounted(outgoing: object) -> int | None:
    """``Channel.segments_of`` of a channel billed per message: nothing to record."""
    return None


@dataclass(frozen=True, slots=True)
class Channel(Generic[Out]):
    """One channel, as the pipeline uses it: render, then send, paced by its own gate."""

    rules: ChannelRules
    renderer: ChannelRenderer[Out]
    sender: ChannelSender[Out]
    gate: SendGate = field(default_factory=SendGate)
    # The parts a sent form was billed as, recorded with its send (SMS segments).
    segments_of: Callable[[Out], int | None] = uncounted

    @property
    def name(self) -> str:
        return self.rules.name


# Opens one channel the first time an email needs it; the composition root closes it at
# shutdown. Raises ``PermanentError`` (bad configuration) or ``RetryableError``.
ChannelOpener = Callable[[], Awaitable[Channel[Any]]]


class Channels:
    """The channels this process delivers through, by name (chosen in ``app``): those
    given open, the others (``openers``) opened by the first email of a job of theirs, so
    that a server sending only email never loads the clients of the other channels."""

    def __init__(
        self,
        channels: Sequence[Channel[Any]],
        openers: Mapping[str, ChannelOpener] | None = None,
    ) -> None:
        self._by_name: dict[str, Channel[Any]] = {c.name: c for c in channels}
        self._openers = {n: o for n, o in (openers or {}).items() if n not in self._by_name}
        # One opening per channel at a time, shared by every email waiting for it; kept
        # here (a strong reference) until it succeeds or an email has seen it fail.
        self._openings: dict[str, asyncio.Task[Channel[Any]]] = {}
        self._closed = False
        self._job_channels: OrderedDict[int, Channel[Any]] = OrderedDict()

    @property
    def names(self) -> tuple[str, ...]:
        """Every channel enabled here, opened or not."""
        return tuple({**self._by_name, **self._openers})

    def get(self, name: str) -> Channel[Any] | None:
        """The channel, if it is open."""
        return self._by_name.get(name)

    async def of_job(self, job_id: int, channel: str) -> Channel[Any]:
        """The channel a claimed email's job delivers through; ``PermanentError`` when
        this server has it off (its settings were changed after ``jobs create``).

        A channel not open yet is opened first: emails that ask meanwhile wait for the
        same opening, and share its error if it fails (the next email to ask opens it
        again, so a transient cause does not stick)."""
        found = self._by_name.get(channel)
        if found is None:
            opening = self._opening(channel)
            try:
                # Shielded: an email cancelled while waiting does not cancel the opening
                # the others wait for.
                found = await asyncio.shield(opening)
            except Exception:
                self._forget(channel, opening)
                raise
        return self._remember(job_id, found)

    def paused_for(self, job_id: int) -> float:
        """Seconds left in the pause of a job's channel. A job not seen here yet is
        taken for an email job (most are): at worst its first claim waits out the pause.
        A channel not open yet has no pause."""
        known = self._job_channels.get(job_id) or self._by_name.get(DEFAULT_CHANNEL)
        return known.gate.paused_for() if known is not None else 0.0

    async def aclose(self) -> None:
        """Stop the openings under way (shutdown: what was opened is closed by its
        opener's owner, after this); no channel is opened afterwards."""
        self._closed = True
        openings = list(self._openings.values())
        self._openings.clear()
        for opening in openings:
            opening.cancel()
        await asyncio.gather(*openings, return_exceptions=True)

    def _opening(self, name: str) -> asyncio.Task[Channel[Any]]:
        opening = self._openings.get(name)
        if opening is not None:
            return opening
        opener = self._openers.get(name)
        if opener is None:
            raise PermanentError(
                f"channel {name!r} is not enabled on this server (enabled: {', '.join(self.names)})"
            )
        if self._closed:
            raise _stopping(name)
        opening = asyncio.get_running_loop().create_task(
            self._open(name, opener), name=f"open-channel-{name}"
        )
        self._openings[name] = opening
        return opening

    async def _open(self, name: str, opener: ChannelOpener) -> Channel[Any]:
        opened = await opener()
        self._by_name[name] = opened
        self._openings.pop(name, None)
        return opened

    def _forget(self, name: str, opening: asyncio.Task[Channel[Any]]) -> None:
        """A failed opening, once an email has its error: the next one opens again."""
        if self._openings.get(name) is opening:
            del self._openings[name]

    def _remember(self, job_id: int, found: Channel[Any]) -> Channel[Any]:
        self._job_channels[job_id] = found
        self._job_channels.move_to_end(job_id)
        if len(self._job_channels) > _REMEMBERED_JOBS:
            self._job_channels.popitem(last=False)
        return found


def _stopping(name: str) -> ThrottledError:
    # Not an attempt: shutdown is no fault of the email's.
    return ThrottledError(f"channel {name!r} is not opened: the server is stopping")


def no_target(setting_hint: str) -> Callable[[str | None], str | None]:
    """``check_target`` of a channel that takes no ``--target`` (email, sms)."""

    def check(target: str | None) -> str | None:
        if target is not None:
            raise TargetRefusedError(f"--target: {setting_hint}")
        return None

    return check
