"""``POST /ses/events``: SES events that SNS delivers over HTTPS (DESIGN §5, §8).

The route is public (SNS cannot send a token), so nothing in a message is believed before
the injected receiver (the SNS adapter) has verified it. Each request ends in one outcome,
reported to ``on_outcome`` for the metric and answered as SNS understands it (SNS retries
5xx and timeouts, never 4xx):

=========================  ======  ==================================================
outcome                    status  when
=========================  ======  ==================================================
``accepted``               200     a verified ``Notification``, handed to ``ingest``
``confirmed``              200     a verified ``SubscriptionConfirmation``, confirmed
``unsubscribed``           200     a verified ``UnsubscribeConfirmation`` (logged)
``too_large``              413     a body over ``max_body`` (256 KiB; SES events are a
                                   few KiB, SNS's own message limit is 256 KB)
``malformed``              400     not a JSON object, a field missing, or an event
                                   ``ingest`` refused as unreadable (``PermanentError``)
``forged`` and             403     refused by the receiver (``SnsMessageRefused``);
``refused_*``, ``expired``         nothing was ingested
``unavailable``            503     AWS could not be reached to check or confirm it, or
                                   ``ingest`` failed otherwise: SNS delivers it again
=========================  ======  ==================================================

Logs carry the outcome, SNS's message id and topic, never the message or the body.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, get_args

import structlog
from aiohttp import web

from delivery_server.errors import PermanentError, SnsMessageRefused, SnsRefusal

log = structlog.get_logger(__name__)

MAX_BODY = 256 * 1024

OUTCOMES = ("accepted", "confirmed", "unsubscribed", "too_large", *get_args(SnsRefusal))
"""Every outcome ``on_outcome`` is called with, so a metric can register them at start-up."""

_STATUS = {"malformed": 400, "unavailable": 503}  # every other refusal is 403

Ingest = Callable[[str], Awaitable[None]]
OnOutcome = Callable[[str], None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SnsDelivery(Protocol):
    """What the handler reads from a verified SNS message."""

    @property
    def type(self) -> str: ...
    @property
    def message_id(self) -> str: ...
    @property
    def topic_arn(self) -> str: ...
    @property
    def message(self) -> str: ...


class SnsReceiver(Protocol):
    """Verifies an SNS message (and confirms a subscription) or raises ``SnsMessageRefused``.

    ``delivery_server.adapters.aws.sns.SnsVerifier`` is the one implementation."""

    async def receive(self, document: Mapping[str, object]) -> SnsDelivery: ...


def ses_events_handler(
    receiver: SnsReceiver,
    ingest: Ingest,
    on_outcome: OnOutcome,
    *,
    max_body: int = MAX_BODY,
) -> Handler:
    """The aiohttp handler for ``POST /ses/events``; ``ingest`` gets each verified
    notification's ``Message`` (the SES event JSON)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        outcome, status = await _outcome(request, receiver, ingest, max_body)
        on_outcome(outcome)
        return web.Response(status=status, text=outcome)

    return handle


async def _outcome(
    request: web.Request, receiver: SnsReceiver, ingest: Ingest, max_body: int
) -> tuple[str, int]:
    body = await _read_capped(request, max_body)
    if body is None:
        log.warning("ses_event_refused", outcome="too_large", max_body=max_body)
        return "too_large", 413
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # ValueError covers bad UTF-8 and bad JSON
        log.warning("ses_event_refused", outcome="malformed", reason="body is not JSON")
        return "malformed", 400
    if not isinstance(document, dict):
        log.warning("ses_event_refused", outcome="malformed", reason="body is not an object")
        return "malformed", 400
    try:
        delivery = await receiver.receive(document)
    except SnsMessageRefused as refused:
        log.warning("ses_event_refused", outcome=refused.outcome, reason=str(refused))
        return refused.outcome, _STATUS.get(refused.outcome, 403)
    bound = log.bind(sns_message_id=delivery.message_id, topic_arn=delivery.topic_arn)
    if delivery.type == "SubscriptionConfirmation":
        bound.info("sns_subscription_confirmed")
        return "confirmed", 200
    if delivery.type == "UnsubscribeConfirmation":
        bound.info("sns_unsubscribe_confirmed")
        return "unsubscribed", 200
    return await _ingest(delivery.message, ingest, bound)


async def _ingest(
    message: str, ingest: Ingest, bound: structlog.typing.FilteringBoundLogger
) -> tuple[str, int]:
    try:
        await ingest(message)
    except PermanentError as exc:
        # Redelivery cannot help: a 4xx tells SNS not to retry.
        bound.warning("ses_event_unreadable", error=type(exc).__name__)
        return "malformed", 400
    except Exception as exc:  # any other failure: answer 503 so that SNS delivers it again
        bound.error("ses_event_ingest_failed", error=type(exc).__name__)
        return "unavailable", 503
    bound.debug("ses_event_accepted")
    return "accepted", 200


async def _read_capped(request: web.Request, max_body: int) -> bytes | None:
    """The whole body, or ``None`` once it passes ``max_body`` (the rest is never read)."""
    if request.content_length is not None and request.content_length > max_body:
        return None
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > max_body:
            return None
    return bytes(body)
