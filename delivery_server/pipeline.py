"""Handling of one queue message: claim → render → send → record → acknowledge.

Every path ends in exactly one settlement of the message, through its ``Settlement``
(delete it, or hide it for a retry, or make it visible again; handed back if a path
ends without one), and of the email row (sent, queued again, failed, unknown, expired).
The email row is written first: a message must not come back before its email is
``queued`` again. The core decides from the error class alone (``retry.decide``).

The job's channel (``channels``: email, sms, s3, sftp, webhook) renders and sends; every
channel is settled the same way, by error class, and paced by its own send gate.

An email renders with its job's pinned template version (``renderer.TemplateCache``)
and records that version with its outcome. Its job's ``send_by`` is checked at the
claim and again just before the send: an email is never sent after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import structlog

from delivery_server.channels import Channel, Channels
from delivery_server.errors import (
    AccountPausedError,
    DeliveryError,
    PermanentError,
    ProviderUnreachableError,
    RecipientOptedOutError,
    RetryableError,
)
from delivery_server.metrics import Metrics
from delivery_server.models import (
    ClaimedEmail,
    ClaimOutcome,
    Delivery,
    EmailStatus,
    FailureKind,
    QueueMessage,
    utcnow,
)
from delivery_server.ports import EmailStore
from delivery_server.renderer import TemplateCache
from delivery_server.retry import Action, compute_backoff, decide, retry_until
from delivery_server.settlement import Settlement, Settlements

log = structlog.get_logger(__name__)

# How long a message waits after its claim could not reach the database.
CLAIM_RETRY_SECONDS = 5
# A write that settles an email is retried from 0.2 s, doubling, up to 5 s apart.
RECORD_RETRY_BASE = 0.2
RECORD_RETRY_CAP = 5.0
_MAX_ERROR_CHARS = 1000


@dataclass(frozen=True, slots=True)
class PipelinePolicy:
    lease_seconds: float
    max_attempts: int
    retry_base_delay: float


class _Stage(Enum):
    PREPARING = 1  # nothing has left the process: safe to hand back
    SENDING = 2  # the provider may have the email: never resend blindly


class Pipeline:
    """Turns one delivery into one settled email."""

    def __init__(
        self,
        store: EmailStore,
        settlements: Settlements,
        channels: Channels,
        metrics: Metrics,
        policy: PipelinePolicy,
    ) -> None:
        self._store = store
        self._settlements = settlements
        self._channels = channels
        self._metrics = metrics
        self._policy = policy
        self._templates = TemplateCache(store)

    async def handle(self, delivery: Delivery) -> None:
        """Handle one delivery and settle its message.

        A failed send is not an error here: it is settled by its class. What does raise:
        ``CancelledError`` (after the message was handed back, or the email recorded
        ``unknown`` if it may have left), and the error of a store write or queue call
        that could not be retried away (a settle write still failing after half the
        lease, a refused visibility change, an unexpected error from the claim). Then
        the message is handed back after ``settlement.ERROR_RETRY_SECONDS`` unless that
        failed call was its settlement (it comes back after its visibility timeout), and
        the lease and the reconciler settle the email."""
        async with self._settlements.of(delivery) as settlement:
            await self._handle(delivery, settlement)

    async def _handle(self, delivery: Delivery, settlement: Settlement) -> None:
        try:
            message = QueueMessage.from_body(delivery.body)
        except PermanentError as exc:
            log.error("queue_message_malformed", error=str(exc))
            await settlement.delete()
            return
        bound = log.bind(job_id=message.job_id, email_id=message.email_id)
        paused_for = self._channels.paused_for(message.job_id)
        if paused_for > 0:
            # Its channel's sending is stopped account-wide: don't claim, don't burn an
            # attempt.
            await settlement.retry_after(int(paused_for) + 1)
            return
        try:
            result = await self._store.claim(message.email_id, self._policy.lease_seconds)
        except RetryableError as exc:
            # The database is away; the store gave back anything it may have claimed.
            # The message comes back in a few seconds instead of after the whole lease.
            bound.warning("claim_failed", error=str(exc)[:200])
            await settlement.retry_after(CLAIM_RETRY_SECONDS)
            return
        if result.outcome is ClaimOutcome.JOB_PAUSED:
            await self._unqueue_paused(message.email_id, settlement, bound)
            return
        if result.outcome is ClaimOutcome.SUPPRESSED:
            # The store made the email final (never sent, not an attempt): nothing to do.
            bound.info("email_suppressed")
            await settlement.delete()
            return
        if result.outcome is ClaimOutcome.EXPIRED:
            # Its job's send_by has passed: the store made it final (not an attempt).
            bound.info("email_expired")
            await settlement.delete()
            return
        if result.claimed is None:
            bound.debug("claim_lost", outcome=result.outcome.value)
            await settlement.delete()
            return
        self._metrics.inflight.inc()
        try:
            await self._process(result.claimed, settlement, bound)
        finally:
            self._metrics.inflight.dec()

    async def _process(
        self,
        claimed: ClaimedEmail,
        settlement: Settlement,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        stage = _Stage.PREPARING
        email, job = claimed.email, claimed.job
        rendered_with: int | None = None  # the template version, once there is one
        provider_id: str | None = None
        channel: Channel[Any] | None = None
        try:
            channel = await self._channels.of_job(job.id, job.channel)
            template = await self._templates.resolve(
                job.template_name, email.locale, job.template_version
            )
            rendered_with = template.version
            outgoing = await channel.renderer.render(claimed, template)
            await channel.gate.wait_for_token()
            # The send rate or a slow attachment may have held it past its job's send_by.
            if not job.deadline_passed(utcnow()):
                stage = _Stage.SENDING
                provider_id = await self._send(channel, outgoing)
        except asyncio.CancelledError:
            await self._settle_cancelled(email.id, settlement, stage, bound, rendered_with)
            raise
        except Exception as exc:  # every failure is settled by class (retry.decide)
            await self._settle_failure(claimed, channel, settlement, exc, bound, rendered_with)
            return
        if provider_id is None:
            await self._settle_expired(email.id, settlement, bound)
            return
        sent, segments = provider_id, channel.segments_of(outgoing)
        await self._record(
            lambda: self._store.mark_sent(email.id, sent, utcnow(), rendered_with, segments),
            bound,
        )
        channel.gate.on_success()
        self._metrics.emails_sent.inc()
        self._count(channel, "sent")
        bound.debug("email_sent", attempt=claimed.email.attempts)
        await settlement.delete()

    async def _send(self, channel: Channel[Any], outgoing: object) -> str:
        started = time.perf_counter()
        try:
            return await channel.sender.send(outgoing)
        finally:
            self._metrics.send_duration.observe(time.perf_counter() - started)

    def _count(self, channel: Channel[Any] | None, outcome: str) -> None:
        """One attempt's outcome, in the channel-blind counter dashboards read and in
        the per-channel one."""
        self._metrics.send_attempts.labels(outcome=outcome).inc()
        self._metrics.count_channel(channel.name if channel is not None else "none", outcome)

    async def _settle_failure(
        self,
        claimed: ClaimedEmail,
        channel: Channel[Any] | None,
        settlement: Settlement,
        exc: Exception,
        bound: structlog.typing.FilteringBoundLogger,
        rendered_with: int | None,
    ) -> None:
        email_id = claimed.email.id
        error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
        if isinstance(exc, RecipientOptedOutError):
            # Nothing was sent: suppressed like a listed address, and listed from now on.
            await self._record(lambda: self._store.mark_opted_out(email_id, error), bound)
            await settlement.delete()
            self._count(channel, "suppressed")
            bound.info("email_suppressed", reason="opted_out")
            return
        decision = decide(
            exc, claimed.email.attempts, self._policy.max_attempts, self._policy.retry_base_delay
        )
        if not isinstance(exc, DeliveryError):  # the error tree covers every expected case
            bound.exception("unexpected_error", error_type=type(exc).__name__)
        if decision.action is Action.RETRY:
            await self._record(
                lambda: self._store.mark_retry(email_id, error, count_attempt=True), bound
            )
            await settlement.retry_after(round(decision.delay))
            self._count(channel, "retry")
            bound.info(
                "email_retry",
                attempt=claimed.email.attempts,
                delay=round(decision.delay, 1),
                error=type(exc).__name__,
            )
        elif decision.action is Action.REQUEUE:
            await self._record(
                lambda: self._store.mark_retry(email_id, error, count_attempt=False), bound
            )
            await settlement.retry_after(round(decision.delay))
            # Only a channel's own sender raises these, so there is a channel (and gate).
            gate = channel.gate if channel is not None else None
            if isinstance(exc, AccountPausedError):
                if gate is not None:
                    gate.pause_account()
                self._count(channel, "paused")
                bound.error("account_sending_paused", error=str(exc)[:200])
            elif isinstance(exc, ProviderUnreachableError):
                if gate is not None:
                    gate.on_unreachable()
                self._count(channel, "unreachable")
                bound.warning("provider_unreachable", error=str(exc)[:200])
            else:
                if gate is not None:
                    gate.on_throttled()
                self._count(channel, "throttled")
        elif decision.action is Action.UNKNOWN:
            await self._record(
                lambda: self._store.mark_final(email_id, EmailStatus.UNKNOWN, error, rendered_with),
                bound,
            )
            await settlement.delete()
            self._metrics.emails_unknown.inc()
            self._count(channel, "unknown")
            bound.warning("email_unknown", error=type(exc).__name__)
        else:
            await self._record(
                lambda: self._store.mark_final(
                    email_id, EmailStatus.FAILED, error, rendered_with, kind=_failure_kind(exc)
                ),
                bound,
            )
            await settlement.delete()
            self._metrics.emails_failed.inc()
            self._count(channel, "failed")
            bound.info("email_failed", attempt=claimed.email.attempts, error=type(exc).__name__)

    async def _unqueue_paused(
        self, email_id: int, settlement: Settlement, bound: structlog.typing.FilteringBoundLogger
    ) -> None:
        """Its job is paused: the email goes back to ``pending`` and its message is
        dropped, so that nothing of the job is received or claimed again while it stays
        paused (the publisher publishes it again once the job is processing)."""
        try:
            unqueued = await self._store.unqueue_paused(email_id)
        except RetryableError as exc:
            bound.warning("unqueue_failed", error=str(exc)[:200])
            await settlement.retry_after(CLAIM_RETRY_SECONDS)
            return
        if unqueued:
            bound.debug("email_unqueued_job_paused")
            await settlement.delete()
        else:  # resumed meanwhile: the email is still queued, claim it again
            await settlement.hand_back()

    async def _settle_expired(
        self, email_id: int, settlement: Settlement, bound: structlog.typing.FilteringBoundLogger
    ) -> None:
        """Its job's send_by came before it could be sent: final, and not an attempt."""
        await self._record(
            lambda: self._store.mark_final(email_id, EmailStatus.EXPIRED, None), bound
        )
        await settlement.delete()
        bound.info("email_expired")

    async def _settle_cancelled(
        self,
        email_id: int,
        settlement: Settlement,
        stage: _Stage,
        bound: structlog.typing.FilteringBoundLogger,
        rendered_with: int | None,
    ) -> None:
        """Shutdown passed its grace period while this email was in hand."""
        try:
            if stage is _Stage.PREPARING:
                await self._store.mark_retry(email_id, None, count_attempt=False)
                await settlement.hand_back()
            else:
                await self._store.mark_final(
                    email_id, EmailStatus.UNKNOWN, "send interrupted by shutdown", rendered_with
                )
                await settlement.delete()
                self._metrics.emails_unknown.inc()
            bound.warning("email_interrupted", stage=stage.name.lower())
        except Exception as exc:  # handed back on exit; the lease and reconciler do the rest
            bound.warning("interrupt_settle_failed", error=type(exc).__name__)

    async def _record(
        self, write: Callable[[], Awaitable[None]], bound: structlog.typing.FilteringBoundLogger
    ) -> None:
        """Retry a write that settles an email: after a send, losing it would turn a
        delivered email into an ``unknown`` one. Bounded by half the lease, after which
        the reconciler owns the email."""

        def log_retry(exc: Exception, delay: float) -> None:
            bound.warning("store_write_retry", error=str(exc)[:200], retry_in=delay)

        await retry_until(
            write,
            retry_on=lambda exc: isinstance(exc, RetryableError),
            delay=lambda failures: compute_backoff(
                failures, base=RECORD_RETRY_BASE, cap=RECORD_RETRY_CAP
            ),
            within=self._policy.lease_seconds / 2,
            on_retry=log_retry,
        )


def _failure_kind(exc: Exception) -> FailureKind:
    """What ``restart-failed --transient-only`` goes by: a ``PermanentError`` would fail
    the same way again; anything else failed because its attempts ran out."""
    return FailureKind.PERMANENT if isinstance(exc, PermanentError) else FailureKind.TRANSIENT
