"""``serve``: the server's loops for a role, built from the adapters ``app.adapters`` opens."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Literal

import structlog

from delivery_server.adapters.sender_outbox import EventSink
from delivery_server.app.adapters import open_queue, open_store
from delivery_server.app.channels import ChannelContext, open_channels
from delivery_server.app.tracking import (
    EventsQueue,
    open_api_listener,
    open_events_queue,
    recorder_for,
    tracker_for,
)
from delivery_server.channels import Channels
from delivery_server.consumer import Consumer
from delivery_server.errors import ConfigError
from delivery_server.fleet import FleetRate, GaugeLeader
from delivery_server.heartbeats import Heartbeats
from delivery_server.http.health import HttpServer
from delivery_server.lifecycle import stop_on_signals
from delivery_server.loops import wait_or_stop
from delivery_server.metrics import Metrics
from delivery_server.pipeline import Pipeline, PipelinePolicy
from delivery_server.ports import Queue, Store
from delivery_server.publisher import Publisher
from delivery_server.reconciler import Reconciler
from delivery_server.renderer import Renderer
from delivery_server.retention import Retention
from delivery_server.sendgate import SendGate
from delivery_server.settings import Settings
from delivery_server.settlement import Settlements
from delivery_server.suppression import UnsubscribeLinks
from delivery_server.tracker import Tracker

log = structlog.get_logger(__name__)


@dataclass
class Listening:
    """What a running ``serve`` tells its caller: ``started`` is set once the health and
    (when configured) API listeners are bound, with their ports."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    http_port: int | None = None
    api_port: int | None = None


Role = Literal["all", "publisher", "consumer", "tracker", "api"]
METRICS_REFRESH_SECONDS = 5.0


async def _refresh_metrics(
    store: Store, queue: Queue, metrics: Metrics, leader: GaugeLeader, stop: asyncio.Event
) -> None:
    """Database and queue gauges, refreshed in the background (never per scrape, so a
    scrape storm cannot load the database)."""
    while True:
        await _refresh_metrics_once(store, queue, metrics, leader)
        if await wait_or_stop(stop, METRICS_REFRESH_SECONDS):
            return


async def _refresh_metrics_once(
    store: Store, queue: Queue, metrics: Metrics, leader: GaugeLeader
) -> None:
    """One process of a fleet counts the database gauges (``GaugeLeader``), the others
    export none; every process exports the queue's backlog (the queue's own count)."""
    try:
        if await leader.leads():
            jobs, emails = await store.count_by_status()
            metrics.set_counts(jobs, emails)
            metrics.set_delivery_counts(await store.count_by_delivery_status())
        else:
            metrics.clear_database_counts()
    except Exception as exc:  # metrics must never stop the server
        log.warning("metrics_refresh_failed", error=type(exc).__name__)
    try:  # whether or not the database answers
        metrics.queue_backlog.set(await queue.backlog())
    except Exception as exc:
        log.warning("metrics_refresh_failed", error=type(exc).__name__)


def _check_role(settings: Settings, role: Role) -> None:
    if settings.queue == "local" and role != "all":
        raise ConfigError(
            "configuration error: DELIVERY_QUEUE=local keeps messages inside one process; "
            "use --role all, or DELIVERY_QUEUE=sqs to split publishers and consumers"
        )
    if role == "tracker" and not settings.events_queue_url:
        raise ConfigError(
            "configuration error: DELIVERY_EVENTS_QUEUE_URL: required with --role tracker"
        )
    if role == "api" and settings.api_port is None:
        raise ConfigError("configuration error: DELIVERY_API_PORT: required with --role api")


def _tracks_here(settings: Settings, role: Role) -> bool:
    """Whether this process runs a tracker: the events queue's own role, ``all``, and a
    sending process whose outbox reports its events in-process."""
    if settings.sender == "outbox":
        return role in ("all", "consumer")
    return role in ("all", "tracker") and settings.events_queue_url is not None


async def serve(
    settings: Settings,
    *,
    role: Role = "all",
    restart_failed: bool = False,
    stop: asyncio.Event | None = None,
    listening: Listening | None = None,
) -> None:
    """Run the server until ``stop`` is set (SIGTERM/SIGINT when ``stop`` is None).

    ``listening``, when given, learns the bound ports once every listener is up (tests
    ask for port 0 and read the one the OS gave).
    """
    _check_role(settings, role)
    own_signals = stop is None
    stop = stop or asyncio.Event()
    metrics = Metrics()
    heartbeats = Heartbeats()
    async with contextlib.AsyncExitStack() as stack:
        if own_signals:
            stack.enter_context(stop_on_signals(stop))
        store = await stack.enter_async_context(open_store(settings))
        # The queue client's pool covers the one long poll plus batched publishes/deletes.
        queue = await stack.enter_async_context(open_queue(settings, max_connections=20))
        http = HttpServer(
            metrics, heartbeats, {"store": lambda: store.jobs(1), "queue": queue.backlog}
        )
        await http.start(settings.http_host, settings.http_port)
        stack.push_async_callback(http.stop)
        if restart_failed:
            restarted = await store.restart_failed(None)
            log.info("failed_emails_restarted", emails=restarted)
        reconciler = Reconciler(
            store,
            queue,
            metrics,
            heartbeats,
            interval=settings.reconcile_interval,
            requeue_after=settings.requeue_after,
        )
        recorder = recorder_for(settings, store, metrics)
        tracker: Tracker | None = None
        events: EventsQueue | None = None
        if _tracks_here(settings, role):
            events = await stack.enter_async_context(open_events_queue(settings))
            tracker = tracker_for(settings, events, recorder, heartbeats, metrics)
        if settings.api_port is not None and role in ("all", "api"):
            api = await stack.enter_async_context(
                open_api_listener(settings, store, recorder, metrics)
            )
            if listening is not None:
                listening.api_port = api.port
        if listening is not None:
            listening.http_port = http.port
            listening.started.set()
        if settings.queue == "local":
            # An in-process queue starts empty: whatever the database says is queued has
            # no message any more, so publish it again now rather than after requeue_after.
            await reconciler.republish_stale(0)
        async with asyncio.TaskGroup() as tasks:
            leader = GaugeLeader(store)
            tasks.create_task(_refresh_metrics(store, queue, metrics, leader, stop))
            if role in ("all", "publisher"):
                publisher = Publisher(
                    store,
                    queue,
                    metrics,
                    heartbeats,
                    poll_interval=settings.poll_interval,
                    page_size=settings.publish_page_size,
                )
                tasks.create_task(publisher.run(stop))
                tasks.create_task(reconciler.run(stop))
                # Daily, beside the publisher: every fleet has one, tracker-only tasks none.
                retention = Retention(store, days=settings.retention_days)
                tasks.create_task(retention.run(stop))
            if role in ("all", "consumer"):
                sink = events.sink if events is not None else None
                tasks.create_task(
                    _consume(settings, stack, store, queue, metrics, heartbeats, leader, stop, sink)
                )
            if tracker is not None:
                tasks.create_task(tracker.run(stop))
    log.info("stopped")


async def _consume(
    settings: Settings,
    stack: contextlib.AsyncExitStack,
    store: Store,
    queue: Queue,
    metrics: Metrics,
    heartbeats: Heartbeats,
    leader: GaugeLeader,
    stop: asyncio.Event,
    events: EventSink | None,
) -> None:
    gate = SendGate()  # the email channel's: the fleet shares out the account's rate on it
    context = ChannelContext(
        settings, events, Renderer(settings.max_rendered_bytes), gate, _unsubscribe_links(settings)
    )
    channels = await stack.enter_async_context(open_channels(context))
    settlements = Settlements(queue)
    metrics.sending_paused.set_function(lambda: 1.0 if gate.paused_for() > 0 else 0.0)
    fleet = await _join_fleet(settings, store, channels, gate, heartbeats)
    leader.fleet = fleet  # a member knows the gauges' leader from its own beats
    pipeline = Pipeline(
        store,
        settlements,
        channels,
        metrics,
        PipelinePolicy(
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
            retry_base_delay=settings.retry_base_delay,
        ),
    )
    consumer = Consumer(
        queue,
        pipeline,
        heartbeats,
        concurrency=settings.concurrency,
        visibility_timeout=int(settings.lease_seconds),
        shutdown_grace=settings.shutdown_grace,
        cancel_deadline=settings.cancel_deadline,
        # An in-process receive loses nothing when cut short, so shutdown need not wait
        # for a long poll there; an SQS receive is let finish (see Consumer).
        wait_seconds=settings.receive_wait if settings.queue == "sqs" else 1.0,
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            if fleet is not None:
                tasks.create_task(fleet.run(stop))
            tasks.create_task(consumer.run(stop))
    finally:
        await settlements.close()


def _unsubscribe_links(settings: Settings) -> UnsubscribeLinks | None:
    if settings.public_url is None or settings.unsubscribe_secret is None:
        return None
    return UnsubscribeLinks(
        settings.public_url, settings.unsubscribe_secret.get_secret_value().encode()
    )


async def _join_fleet(
    settings: Settings, store: Store, channels: Channels, gate: SendGate, heartbeats: Heartbeats
) -> FleetRate | None:
    """Share the email account's send rate (DELIVERY_MAX_SEND_RATE, else what SES says)
    among the live sending processes; None when there is no rate to respect."""
    email = channels.get("email")
    total = settings.max_send_rate or (await email.sender.max_send_rate() if email else None)
    if not total:
        return None
    fleet = FleetRate(store, gate, heartbeats, total_rate=total)
    await fleet.join()
    log.info("send_rate", account_rate=total, processes=fleet.live)
    return fleet
