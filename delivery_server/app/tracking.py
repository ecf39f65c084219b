"""Tracking's wiring: the events queue, the tracker, and the API listener's public routes.

Where SES events come from:

* ``DELIVERY_EVENTS_QUEUE_URL``: the SQS queue SES's configuration set feeds (through SNS
  or EventBridge); the tracker (``--role tracker``, or ``all``) consumes it;
* the outbox (embedded mode): it reports a delivery per ``.eml`` it writes onto an
  in-process queue, consumed by a tracker in the same process;
* ``POST /ses/events`` on the API listener (SNS HTTPS subscriptions), verified by
  ``adapters.aws.sns`` and recorded through the same tracker.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from yarl import URL

from delivery_server.adapters.sender_outbox import EventSink
from delivery_server.brake import BrakeThresholds
from delivery_server.errors import ConfigError, RetryableError
from delivery_server.heartbeats import Heartbeats
from delivery_server.http.api import FailedAttempts, api_routes
from delivery_server.http.dashboard import add_dashboard
from delivery_server.http.listener import Listener
from delivery_server.http.security import api_json_errors, secure_headers
from delivery_server.http.ses_events import ses_events_handler
from delivery_server.http.unsubscribe import unsubscribe_routes
from delivery_server.metrics import Metrics
from delivery_server.models import EventOutcome
from delivery_server.ports import Queue, Store, TrackingStore
from delivery_server.renderer import Renderer
from delivery_server.settings import Settings
from delivery_server.tracker import EventRecorder, Tracker
from delivery_server.tracking import parse_event_message

if TYPE_CHECKING:
    from delivery_server.adapters.aws.sns import SnsHostPolicy


@dataclass(frozen=True)
class EventsQueue:
    """The queue the tracker consumes; ``sink`` is set when the outbox feeds it."""

    queue: Queue
    sink: EventSink | None = None


@contextlib.asynccontextmanager
async def open_events_queue(settings: Settings) -> AsyncIterator[EventsQueue]:
    """The queue SES events arrive on: in-process for the outbox, else SQS (the caller
    opens it only when tracking is on: see ``roles._tracks_here``)."""
    if settings.sender == "outbox":
        from delivery_server.adapters.queue_local import LocalQueue

        local = LocalQueue()
        yield EventsQueue(local, sink=local)
        return
    from delivery_server.adapters.aws.sqs import open_sqs_queue

    assert settings.events_queue_url is not None  # see roles._tracks_here
    async with open_sqs_queue(
        settings.events_queue_url,
        endpoint_url=settings.aws_endpoint_url,
        max_connections=10,
        http=settings.aws_http,
    ) as queue:
        yield EventsQueue(queue)


def recorder_for(settings: Settings, store: TrackingStore, metrics: Metrics) -> EventRecorder:
    """The event recorder, with the reputation brake's thresholds from the settings."""
    brake = BrakeThresholds(
        bounce_rate=settings.brake_bounce_rate,
        complaint_rate=settings.brake_complaint_rate,
        min_sends=settings.brake_min_sends,
    )
    return EventRecorder(store, metrics, brake)


def tracker_for(
    settings: Settings,
    events: EventsQueue,
    recorder: EventRecorder,
    heartbeats: Heartbeats,
    metrics: Metrics,
) -> Tracker:
    """The tracker consuming ``events``."""
    return Tracker(
        events.queue,
        recorder,
        heartbeats,
        metrics,
        # An in-process receive is cut short at shutdown without loss; SQS's is let finish.
        wait_seconds=1.0 if events.sink is not None else settings.receive_wait,
    )


# JSON bodies of the API (an upload streams past this; /ses/events caps its own).
API_MAX_BODY = 1024 * 1024


@contextlib.asynccontextmanager
async def open_api_listener(
    settings: Settings, store: Store, recorder: EventRecorder, metrics: Metrics
) -> AsyncIterator[Listener]:
    """The API listener on ``DELIVERY_API_HOST:PORT``: ``POST /ses/events``, with an
    unsubscribe key ``GET|POST /unsubscribe/{token}``, the token-protected JSON API
    under ``/api/v1``, and the dashboard at ``/`` (behind its login); nothing else."""
    from delivery_server.adapters.aws.sns import SnsVerifier

    assert settings.api_port is not None  # the caller opens it only with a port

    def count(outcome: str) -> None:
        metrics.event_outcomes.labels(outcome=outcome).inc()

    async def ingest(message: str) -> None:
        # A malformed event is a PermanentError: the handler answers 400 (SNS drops it).
        [outcome] = await recorder.record([parse_event_message(message)])
        if outcome is EventOutcome.EARLY:  # 503: SNS delivers it again later
            raise RetryableError("the event's email has no send record yet")

    hosts = sns_host_policy(settings.sns_cert_origin)
    async with aiohttp.ClientSession() as session:
        verifier = SnsVerifier(session, settings.topic_arns, hosts=hosts)
        app = web.Application(client_max_size=API_MAX_BODY, middlewares=[api_json_errors])
        app.on_response_prepare.append(secure_headers)
        app.router.add_post("/ses/events", ses_events_handler(verifier, ingest, count))
        if settings.unsubscribe_secret is not None:
            secret = settings.unsubscribe_secret.get_secret_value().encode()
            app.add_routes(unsubscribe_routes(secret, store.unsubscribe_email, count))
        ready = settings.public_url is not None and settings.unsubscribe_secret is not None
        renderer = Renderer(settings.max_rendered_bytes)
        attempts = FailedAttempts()  # one limit for bearer tokens and the login form
        console = add_dashboard(app, store, attempts)
        app.add_routes(
            api_routes(
                store,
                renderer,
                unsubscribe_ready=ready,
                attempts=attempts,
                sessions=console.api_session,
            )
        )
        listener = Listener(app, "api")
        await listener.start(settings.api_host, settings.api_port)
        try:
            yield listener
        finally:
            await listener.stop()


def sns_host_policy(origin: str | None) -> SnsHostPolicy:
    """Where SNS certificates and confirmation links may be fetched: AWS's SNS hosts, or
    the one ``DELIVERY_SNS_CERT_ORIGIN`` (tests only) names."""
    from delivery_server.adapters.aws.sns import SnsHostPolicy

    if not origin:
        return SnsHostPolicy()
    not_an_origin = ConfigError(
        "configuration error: DELIVERY_SNS_CERT_ORIGIN: must be an origin,"
        " http(s)://host[:port], and nothing more"
    )
    try:
        url = URL(origin)
        port = url.port  # a port that is not a number raises here
    except ValueError:
        raise not_an_origin from None
    # Anything more than an origin would be ignored (a path, a query), and no host would
    # make every message look as if from another host.
    if (
        url.scheme not in ("http", "https")
        or not url.raw_host
        or url.path not in ("", "/")
        or url.query_string
        or url.fragment
        or url.user is not None
    ):
        raise not_an_origin
    return SnsHostPolicy(scheme=url.scheme, host=re.compile(re.escape(url.raw_host)), port=port)
